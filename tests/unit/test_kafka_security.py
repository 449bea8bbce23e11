"""Kafka SASL/TLS settings become aiokafka keyword arguments and faust credentials."""

from __future__ import annotations

import ssl

import faust
from pydantic import SecretStr

from streams.pipeline.faust_consumer import faust_credentials
from streams.settings import Settings
from streams.stack.kafka_security import client_kwargs


def test_plaintext_adds_nothing() -> None:
    assert client_kwargs(Settings()) == {}
    assert faust_credentials(Settings()) is None


def test_sasl_over_tls_passes_every_part() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="segmenter",
        kafka_sasl_password=SecretStr("s3cret"),
    )
    kwargs = client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "segmenter"
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "segmenter" and credentials.ssl_context is not None


def test_tls_only_uses_ssl_credentials() -> None:
    settings = Settings(kafka_security_protocol="SSL")
    kwargs = client_kwargs(settings)
    assert set(kwargs) == {"security_protocol", "ssl_context"}
    assert isinstance(faust_credentials(settings), faust.SSLCredentials)


def test_settings_come_from_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SEGMENTER_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("SEGMENTER_KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("SEGMENTER_KAFKA_SASL_PASSWORD", "p")
    kwargs = client_kwargs(Settings())
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT" and "ssl_context" not in kwargs
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("u", "p")
