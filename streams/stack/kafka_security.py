"""Kafka SASL/TLS from ``Settings``: keyword arguments for aiokafka clients
(faust's credentials: :func:`streams.pipeline.faust_consumer.faust_credentials`).

``SEGMENTER_KAFKA_SECURITY_PROTOCOL`` is ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT``
or ``SASL_SSL``; SASL takes ``SEGMENTER_KAFKA_SASL_MECHANISM`` (``PLAIN``, ``SCRAM-SHA-256``,
``SCRAM-SHA-512``), ``..._USERNAME`` and ``..._PASSWORD``; TLS takes
``SEGMENTER_KAFKA_SSL_CAFILE`` and, for client certificates, ``..._CERTFILE``/``..._KEYFILE``.
Redis ACLs and TLS need no setting of their own: ``SEGMENTER_REDIS_URL`` carries them
(``rediss://user:password@host:port/0``).
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from streams.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for the broker, or None without TLS."""
    if "SSL" not in settings.kafka_security_protocol:
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
    )
    return context


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client of the segmenter gets."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password else None,
        )
    return kwargs
