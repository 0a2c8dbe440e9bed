"""Configuration: environment variables prefixed `POSBRIDGE_`, `.env` supported, read once."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bridge.adapters.base import AdapterSettings

CommaList = Annotated[list[str], NoDecode]


class ConfigError(RuntimeError):
    """Configuration that cannot work; the message names the variable to fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="POSBRIDGE_", env_file=".env", extra="ignore", env_file_encoding="utf-8"
    )

    var_dir: Path = Path("var")
    database_url: str = ""
    broker_url: str = ""
    systems: CommaList = Field(default_factory=list, description="enabled systems, comma-separated")
    extra_adapters: CommaList = Field(default_factory=list)
    default_region: str = "US"
    match_rules: CommaList = Field(default_factory=lambda: ["email", "phone", "customer_code"])
    system_priority: CommaList = Field(
        default_factory=lambda: ["square", "onsite", "fieldpine", "loyverse", "lsone"]
    )
    delete_policy: Literal["mark", "propagate"] = "mark"
    delete_grace_s: float = 10.0  # a delete waits this long for a merge that explains it

    max_body_bytes: int = 1_048_576
    coalesce_window_s: float = 0.3
    retry_base_s: float = 1.0
    retry_cap_s: float = 900.0
    max_attempts: int = 12
    lease_s: float = 120.0
    requeue_after_s: float = 30.0
    sweep_interval_s: float = 5.0
    upkeep_interval_s: float = 60.0  # planner statistics and dead rows (bridge.store.upkeep)
    probe_interval_s: float = 30.0
    inbox_retention_h: float = 96.0
    short_wait_s: float = 5.0  # waits up to this ride a Celery countdown; longer ones the sweeper

    trigger_token: SecretStr | None = None
    ops_user: str = "ops"
    ops_password: SecretStr | None = None
    flower_basic_auth: SecretStr | None = None  # "user:password" for `posbridge flower`
    flower_port: int = 5555
    log_level: str = "INFO"
    log_json: bool = True
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    worker_concurrency: int = 2
    # Prefix of every queue name: lets several deployments (or test runs) share a broker.
    queue_prefix: str = ""

    @field_validator("systems", "extra_adapters", "match_rules", "system_priority", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("inbox_retention_h")
    @classmethod
    def _retention(cls, value: float) -> float:
        if value < 72:
            raise ValueError("must be at least 72 hours: Square redelivers for up to 72 h")
        return value

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'posbridge.sqlite').as_posix()}"

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.var_dir / 'broker.sqlite').as_posix()}"

    def secrets(self) -> list[str]:
        return [
            value.get_secret_value()
            for value in (self.trigger_token, self.ops_password, self.flower_basic_auth)
            if value is not None and value.get_secret_value()
        ]


def env_prefix(system: str) -> str:
    return f"POSBRIDGE_{system.upper()}_"


def load_adapter_settings(system: str, model: type[AdapterSettings]) -> AdapterSettings:
    """Read one system's settings; a missing credential names its variable."""
    try:
        return model(_env_prefix=env_prefix(system))
    except ValidationError as err:
        problems = []
        for item in err.errors():
            name = env_prefix(system) + "_".join(str(p) for p in item["loc"]).upper()
            problems.append(f"{name}: {item['msg']}")
        raise ConfigError(
            f"system {system!r} is enabled but its settings are incomplete: " + "; ".join(problems)
        ) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    get_settings.cache_clear()


def mask(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "********" if value.get_secret_value() else ""
    if isinstance(value, Path):
        return str(value)
    return value


def _masked_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return url
    if parsed.password:
        return parsed.render_as_string(hide_password=True)
    return url


def effective_config(settings: Settings, adapters: dict[str, AdapterSettings]) -> dict[str, Any]:
    """The config as a flat name → value map with every secret masked, for `config show`."""
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        out[f"POSBRIDGE_{name.upper()}"] = mask(getattr(settings, name))
    out["POSBRIDGE_DATABASE_URL"] = _masked_url(settings.db_url)
    out["POSBRIDGE_BROKER_URL"] = _masked_url(settings.broker)
    for system, conf in adapters.items():
        for name in type(conf).model_fields:
            out[env_prefix(system) + name.upper()] = mask(getattr(conf, name))
    return out
