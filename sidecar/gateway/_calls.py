"""The gateway's side of gRPC: one channel per event loop, generic unary and streaming calls.

Calls are made by method path with the request and response classes taken from the
descriptors, so the gateway needs no generated stubs and no code per RPC. The HTTP
``Authorization`` header is forwarded as the ``authorization`` metadata (the auth contract).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from google.protobuf.message import Message

from sidecar.auth import AUTHORIZATION_METADATA
from sidecar.gateway._tracing import trace_metadata


class Upstream:
    """The gRPC target, with a channel per running event loop (grpc.aio channels are loop-bound)."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 60.0,
        max_message_bytes: int = 4 * 1024 * 1024,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.target = target
        self._credentials = credentials
        self.timeout = timeout
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._channels: dict[asyncio.AbstractEventLoop, grpc.aio.Channel] = {}

    def channel(self) -> grpc.aio.Channel:
        """The channel of the running event loop, opened on first use."""
        loop = asyncio.get_running_loop()
        channel = self._channels.get(loop)
        if channel is None:
            for other in [lp for lp in self._channels if lp.is_closed()]:
                del self._channels[other]
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                channel = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
            self._channels[loop] = channel
        return channel

    async def close(self) -> None:
        """Close the running loop's channel."""
        channel = self._channels.pop(asyncio.get_running_loop(), None)
        if channel is not None:
            await channel.close()

    async def unary(
        self,
        path: str,
        request: Message,
        response_class: type[Message],
        authorization: str | None,
        metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> Message:
        """Call a unary method; ``metadata`` is sent besides the authorization and trace keys.

        Raises:
            grpc.RpcError: the call failed.
        """
        call = self.channel().unary_unary(
            path,
            request_serializer=_serialize,
            response_deserializer=response_class.FromString,
        )
        sent = (*_metadata(authorization), *metadata)
        result: Message = await call(request, timeout=self.timeout, metadata=sent)
        return result

    def stream(
        self, path: str, request: Message, response_class: type[Message], authorization: str | None
    ) -> grpc.aio.UnaryStreamCall[Message, Message]:
        """Call a server-streaming method; iterate the returned call for its messages."""
        call = self.channel().unary_stream(
            path,
            request_serializer=_serialize,
            response_deserializer=response_class.FromString,
        )
        return call(request, metadata=_metadata(authorization))


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _metadata(authorization: str | None) -> tuple[tuple[str, str], ...]:
    trace = trace_metadata()
    if not authorization:
        return trace
    # gRPC metadata values must be printable ASCII; anything else cannot be a valid token.
    if not authorization.isascii() or not authorization.isprintable():
        return ((AUTHORIZATION_METADATA, "Bearer invalid"), *trace)
    return ((AUTHORIZATION_METADATA, authorization), *trace)
