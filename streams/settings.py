"""The one configuration object: environment variables with the ``SEGMENTER_`` prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the segmenter can be told. Each field is ``SEGMENTER_<FIELD>`` in the environment.

    ``kafka_bootstrap`` and ``redis_url`` left unset mean "start an embedded one" for the commands
    that can (``up``, ``replay``); a worker needs both.
    """

    model_config = SettingsConfigDict(env_prefix="SEGMENTER_", extra="ignore")

    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers, host:port,...")
    redis_url: str | None = Field(
        None, description="redis:// (or rediss:// for TLS, with user:password@ for ACLs) URL"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle of the broker's TLS")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(None, description="client key (mutual TLS)")
    rules: Path = Field(Path("rules"), description="directory of segment rule files (YAML)")
    input_topic: str = "segmenter.events"
    migrations_topic: str = "segmenter.migrations"
    dlq_topic: str = "segmenter.events.dlq"
    memberships_topic: str = Field(
        "segmenter.memberships", description="compacted topic: each customer's current segments"
    )
    input_partitions: int = Field(8, ge=1, description="partitions of the input topic when created")
    migrations_partitions: int = Field(8, ge=1)
    clock: Literal["processing", "event"] = "processing"
    allowed_lateness_s: float = Field(300.0, ge=0, description="event-time lateness allowance")
    idle_settle_s: float = Field(
        0.0,
        ge=0,
        description="event time: publish a quiet partition's latest instant after this many"
        " seconds with no later event (0: only when event time moves on)",
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")
    api_key: SecretStr | None = None
    write_keys: SecretStr | None = Field(
        None,
        description="comma-separated write keys of the HTTP collector (Segment's tracking API);"
        " unset: the collector refuses every request",
    )
    collector_origins: str = Field(
        "",
        description="comma-separated browser origins allowed to post to the collector (CORS);"
        " * for any; the API's own origin is always allowed",
    )
    control_secret: SecretStr | None = Field(
        None,
        description="HMAC key that signs control records (watermarks) on the input topic;"
        " unset: every control record goes to the DLQ (`replay` makes its own)",
    )
    max_future_s: float = Field(
        86400.0,
        gt=0,
        description="processing clock: an event stamped further ahead of the worker's clock"
        " goes to the DLQ (kind schema)",
    )
    visitor_secret: SecretStr | None = Field(
        None,
        description="HMAC key of the browser tokens of /v1/visitor/* (unset: those routes are"
        " off, except under `up`, which makes one for its processes)",
    )
    visitor_origins: str = Field(
        "",
        description="comma-separated origins (scheme://host[:port]) whose pages may call"
        " /v1/visitor/* cross-origin; `*` allows any",
    )
    visitor_token_ttl_s: int = Field(3600, ge=60, description="lifetime of a visitor token")
    visitor_heartbeat_s: float = Field(
        15.0, gt=0, description="comment line sent on an idle visitor stream this often"
    )
    visitor_resume_depth: int = Field(
        32, ge=0, description="recent migrations kept per followed visitor for Last-Event-ID"
    )
    visitor_resume_s: float = Field(
        600.0, ge=0, description="how long they are kept after the visitor's last stream closed"
    )
    visitor_max_connections: int = Field(
        10_000, ge=1, description="open visitor streams per API process (more get 503)"
    )
    group_id: str = Field("segmenter", description="Kafka consumer group of the workers")
    redis_cluster: bool = Field(
        False, description="SEGMENTER_REDIS_URL is a node of a Redis Cluster"
    )
    retry_attempts: int = Field(
        8, ge=1, description="tries of a batch or start on Redis/Kafka errors before exit 75"
    )
    retry_max_delay_s: float = Field(
        5.0, gt=0, description="longest wait between two tries (doubling from 0.2 s)"
    )
    session_timeout_s: float = Field(
        10.0,
        ge=1,
        description="how long the consumer group waits for a silent worker before moving its"
        " partitions",
    )
    redis_layout: Literal["single", "partitioned"] = Field(
        "single",
        description="Redis keys in one group per namespace (single) or one per input partition"
        " (partitioned: spreads a namespace over a cluster's shards)",
    )
    namespace: str = Field("seg", description="prefix of every Redis key")
    max_event_bytes: int = Field(32 * 1024, ge=256, description="larger input goes to the DLQ")
    batch_size: int = Field(500, ge=1, description="events applied per Redis round trip")
    state_cache_customers: int = Field(
        20_000,
        ge=0,
        description="customer states a worker keeps decoded between batches (about 3 KB each),"
        " least recently used dropped first (0: none; Redis stays the record either way)",
    )
    gc_young_threshold: int = Field(
        50_000,
        ge=0,
        description="net allocations of Python containers between two young-generation garbage"
        " collections in a worker or an import (Python's default: 700; 0 keeps Python's"
        " collector as it is)",
    )
    fetch_max_wait_ms: int = Field(20, ge=1, description="longest a fetch waits at the broker")
    incremental_evaluation: bool = Field(
        True, description="re-evaluate only the segments an event can change (same result)"
    )
    batch_within_s: float = Field(
        0.0, ge=0, description="longest wait for a fuller batch (0: take what is queued)"
    )
    timer_interval_s: float = Field(0.25, gt=0, description="how often due timers are fired")
    rfm_refresh_s: float = Field(3600.0, gt=0, description="how often live RFM boundaries refresh")
    dedupe_depth: int = Field(16, ge=0, description="recent messageIds remembered per customer")
    max_identities: int = Field(50, ge=2, description="ids one profile may merge, at most")
    personal_traits: list[str] = Field(
        default_factory=lambda: [
            "email",
            "phone",
            "name",
            "first_name",
            "last_name",
            "birthday",
            "address.street",
            "address.postal_code",
        ],
        description="trait paths never written to migration events or logs",
    )
    history_retention_hours: int = Field(
        90 * 24,
        ge=24,
        description="hours of size history kept (counted back from the newest migration's hour)",
    )
    report_window_days: float = Field(
        30.0, gt=0, le=400, description="performance window of `report` (within the pack's)"
    )
    report_min_share: float = Field(
        0.02, ge=0, le=1, description="report: a segment with a smaller share is too small"
    )
    report_max_share: float = Field(
        0.6, ge=0, le=1, description="report: a segment with a larger share is too large"
    )
    report_max_jaccard: float = Field(
        0.8, ge=0, le=1, description="report: more overlap than this is not differentiable"
    )
    report_min_reach: float = Field(
        0.3, ge=0, le=1, description="report: fewer reachable members than this is unreachable"
    )
    report_max_primary: int = Field(
        8, ge=1, description="report: more active primary segments than this is too many"
    )
    report_min_compare: int = Field(
        30, ge=2, description="report: members both segments need before rates are compared"
    )
    report_device_traits: list[str] = Field(
        default_factory=lambda: ["device_token", "push_token", "device_id"],
        description="traits that make a customer reachable on a device (with consent)",
    )
    destinations: Path = Field(
        Path("destinations"), description="directory of destination files for `deliver`"
    )
    deliver_group: str = Field(
        "segmenter-deliver", description="consumer group prefix: one group per destination"
    )
    ce_source: str = Field("urn:segmenter", description="CloudEvents source attribute")
    state_dir: Path = Field(Path(".segmenter"), description="where `up` writes stack.json")
    data_dir: Path = Field(
        Path(".segmenter/data"),
        description="where `segmenter up` keeps its embedded Redis (append-only file) between runs",
    )
    embedded_max_records: int = Field(
        30_000,
        ge=1000,
        description="records `segmenter up`'s embedded broker may hold before `up` drains the "
        "stack and starts a new broker generation (its CPU grows with what it holds)",
    )
    embedded_check_s: float = Field(
        30.0, gt=0, description="how often `segmenter up` counts what its embedded broker holds"
    )
    log_resets: bool = Field(
        False,
        description="set by `segmenter up` for its children: the embedded broker starts with "
        "empty topics at each start, so a consumer group without a position reads from the start",
    )
    log_level: str = "info"

    @field_validator("api_key", "write_keys", "visitor_secret", "control_secret", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        """An empty secret (``SEGMENTER_API_KEY=`` in a compose file or .env) means unset."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def write_key_list(self) -> tuple[str, ...]:
        """The collector's write keys (``SEGMENTER_WRITE_KEYS`` split on commas)."""
        if self.write_keys is None:
            return ()
        return _items(self.write_keys.get_secret_value())

    @property
    def collector_origin_set(self) -> frozenset[str]:
        """``collector_origins`` as a set (trailing slashes dropped, empty items ignored)."""
        return frozenset(o.rstrip("/") for o in _items(self.collector_origins))

    @property
    def visitor_origin_set(self) -> frozenset[str]:
        """``visitor_origins`` as a set (trailing slashes dropped, empty items ignored)."""
        return frozenset(o.rstrip("/") for o in _items(self.visitor_origins))


def _items(text: str) -> tuple[str, ...]:
    """The non-empty items of a comma-separated setting, stripped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())
