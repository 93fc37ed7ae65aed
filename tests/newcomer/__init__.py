"""A newcomer's first hour (issue 15): doctor, one-line errors, help texts, the README's set-up lines."""
