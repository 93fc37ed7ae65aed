# Sourced by scripts/test.sh and scripts/demo.sh: the project's .venv, made with Python >= 3.11.

# Print the first Python >= 3.11 on PATH, or fail.
find_python() {
    local candidate
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}
