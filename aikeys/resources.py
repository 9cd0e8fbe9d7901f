"""The aikeys API (group `aikeys.dev`, version `v1alpha1`): AIKey, Allocation, AIProvider.

These models are the contract. The CRDs under `crds/` are generated from them
(`python -m aikeys.crds`), the operator and gateway parse objects with them, and every field's
description is what `kubectl explain` shows. Money is a USD decimal string in the API and
integer nano-USD inside (see `aikeys.money`).
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict, JsonValue

from aikeys import durations, limits
from aikeys.durations import DURATION_PATTERN, parse_duration, seconds_cel
from aikeys.money import USD_PATTERN
from aikeys.periods import Period

GROUP = "aikeys.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "ai"

NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$"
NAMESPACE_OR_STAR = r"^(\*|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$"


def cel(rule: str, message: str) -> JsonDict:
    """One `x-kubernetes-validations` entry."""
    return {"rule": rule, "message": message}


def usd(
    description: str,
    what: str,
    maximum: int,
    default: str | None = None,
    optional: bool = False,
    alias: str | None = None,
) -> Any:
    """A USD amount field: a decimal string, checked by the API server with a readable message
    (`optional`: it may be left out, None; `alias`: its name where the camel-case rule would
    not give it)."""
    rules: list[JsonValue] = [
        cel(
            f"self.matches(r'{USD_PATTERN}')",
            f'{what} must be a USD amount like "25.00": digits, an optional point, at most 9 decimals',
        ),
        cel(
            f"!self.matches(r'{USD_PATTERN}') || double(self) <= {maximum}.0",
            f"{what} must be at most {maximum} USD (the ledger counts nano-USD exactly below 2^53)",
        ),
    ]
    extra: JsonDict = {"maxLength": 32, "x-kubernetes-validations": rules}
    if optional:
        return Field(None, alias=alias, description=description, json_schema_extra=extra)
    if default is None:
        return Field(description=description, json_schema_extra=extra)
    return Field(default, description=description, json_schema_extra=extra)


def duration(
    description: str, what: str, maximum: str, default: str | None = None, positive: bool = False
) -> Any:
    """A duration field ("720h", "30d", "1h30m") of at most `maximum` (and more than 0 if
    `positive`), checked by the API server with a readable message."""
    seconds, well_formed = seconds_cel(), f"self.matches(r'{DURATION_PATTERN}')"
    rules: list[JsonValue] = [
        cel(well_formed, f'{what} must be a duration like "720h", "30d" or "1h30m" (units ms, s, m, h, d)'),
        cel(
            f"!{well_formed} || {seconds} <= {parse_duration(maximum).total_seconds()}",
            f"{what} must be at most {maximum}",
        ),
    ]
    if positive:
        rules.append(cel(f"!{well_formed} || {seconds} > 0.0", f"{what} must be more than 0s"))
    return Field(
        default,
        description=f"{description} At most {maximum}.",
        json_schema_extra={"maxLength": 32, "x-kubernetes-validations": rules},
    )


class Schema(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields ignored (forward compatible)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


# --- shared -------------------------------------------------------------------------------------


class Condition(Schema):
    """The state of one aspect of the object, as Kubernetes API conventions define conditions."""

    type: str = Field(description="Type of condition in CamelCase, e.g. Ready or Exhausted.", max_length=316)
    status: str = Field(
        description="True, False or Unknown.", json_schema_extra={"enum": ["True", "False", "Unknown"]}
    )
    reason: str = Field("", description="Machine-readable reason for the last transition, in CamelCase.")
    message: str = Field("", description="Human-readable details of the last transition.")
    last_transition_time: dt.datetime | None = Field(None, description="When the status last changed.")
    observed_generation: int | None = Field(
        None, description="The .metadata.generation this was computed from."
    )


class LocalRef(Schema):
    """A reference to an object in the same namespace."""

    name: str = Field(description="Name of the referenced object.", min_length=1, max_length=253)


class RateLimits(Schema):
    """Rate limits: at most `requests` requests and `tokens` tokens per `window`. Tokens are input +
    output, counted at the request's upper bound when it is admitted and corrected to what it
    used when it settles. Windows are fixed (aligned to the window length, in Redis's clock) and
    shared by every gateway replica. Over a limit: HTTP 429 with retry-after."""

    requests: int | None = Field(None, description="Requests per window.", ge=1, le=1_000_000_000)
    tokens: int | None = Field(
        None, description="Input + output tokens per window.", ge=1, le=limits.MAX_TOKEN_LIMIT
    )
    window: str = duration(
        'Window length, e.g. "1m" (the default) or "10s".', "limits.window", durations.MAX_WINDOW, "1m", True
    )

    model_config = ConfigDict(
        **Schema.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.requests) || has(self.tokens)", "set limits.requests, limits.tokens or both")
            ]
        },
    )


def rate_limits(what: str) -> Any:
    return Field(None, description=f"Rate limits of {what} (requests and tokens per window).")


# --- Allocation ---------------------------------------------------------------------------------


class AllocationSpec(Schema):
    """A budget that AI keys draw from."""

    budget: str = usd(
        'Spending limit per period in USD, as a decimal string with at most 9 decimals (e.g. "25.00"). '
        "Requests that could take spend past it are refused with HTTP 402.",
        "spec.budget",
        limits.MAX_BUDGET_USD,
    )
    period: Period = Field(
        Period.MONTHLY,
        description=(
            "When the budget starts again, calendar-aligned in UTC: None (never), Daily, Weekly "
            "(ISO weeks, from Monday) or Monthly."
        ),
    )
    token_limit: int | None = Field(
        None,
        description="Optional limit of input+output tokens per period, on top of the budget.",
        ge=1,
        le=limits.MAX_TOKEN_LIMIT,
    )
    limits: RateLimits | None = rate_limits("the whole allocation, across its keys")
    alert_thresholds: list[int] = Field(
        default_factory=lambda: [80, 100],
        description="Percentages of the budget at which a warning event is posted, once per period.",
        json_schema_extra={
            "items": {"type": "integer", "minimum": 1, "maximum": 1000},
            "maxItems": 10,
            "default": [80, 100],
        },
    )


class AllocationStatus(Schema):
    """Spend of the current period, kept current by the operator from the ledger."""

    spent: str | None = Field(None, description="USD spent in the current period.")
    remaining: str | None = Field(None, description="USD left in the current period (budget minus spent).")
    reserved: str | None = Field(None, description="USD held by requests in flight.")
    tokens: int | None = Field(None, description="Input+output tokens used in the current period.")
    requests: int | None = Field(None, description="Requests settled in the current period.")
    period_start: dt.datetime | None = Field(None, description="Start of the current period (UTC).")
    period_end: dt.datetime | None = Field(None, description="End of the current period (UTC).")
    keys: int | None = Field(None, description="Number of AIKeys that draw from this allocation.")
    alerted_threshold: int | None = Field(
        None, description="Highest alert threshold already reported this period."
    )
    alerted_period: str | None = Field(None, description="Period id the alerted threshold belongs to.")
    observed_generation: int | None = Field(None, description="The .metadata.generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready (the ledger is readable) and Exhausted (no budget left)."
    )


# --- AIKey --------------------------------------------------------------------------------------


class KeyPhase(StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    EXPIRED = "Expired"
    DISABLED = "Disabled"


class AIKeySpec(Schema):
    """An API key for the gateway, drawing from an Allocation in the same namespace."""

    allocation_ref: LocalRef = Field(
        description="The Allocation (same namespace) this key's spend is charged to."
    )
    owner: str | None = Field(
        None,
        description="The Kubernetes user the key belongs to (usage is grouped by it). With the chart's "
        "admission policy it must be the user who creates the key (`kubectl aikeys keys create` fills it "
        "in) and cannot change afterwards, and only the owner may rotate, disable, enable, change or "
        "delete the key; only users allowed to `create` the virtual resource `aikeys/owner` (group "
        "aikeys.dev) in the namespace may set another owner, change it, or act on others' keys.",
        min_length=1,
        max_length=1024,
    )
    ttl: str | None = duration(
        'How long the key is valid after creation, e.g. "720h" or "30d" (units ms, s, m, h, d). '
        "Not together with expiresAt. Neither: the key does not expire.",
        "spec.ttl",
        durations.MAX_TTL,
    )
    expires_at: dt.datetime | None = Field(
        None, description="When the key stops working (RFC 3339). Not together with ttl."
    )
    models: list[str] = Field(
        default_factory=list,
        description='Model IDs this key may use ("owner:provider/model"; `*` matches any characters). '
        "Empty: every model the namespace can reach.",
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 300}, "maxItems": 256},
    )
    disabled: bool = Field(False, description="Refuse requests with this key while true; the key is kept.")
    rotation: int = Field(
        0,
        description="Increase to rotate: a new key is minted into the same Secret.",
        ge=0,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self >= oldSelf", "rotation can only increase (bump it to rotate the key)")
            ]
        },
    )
    rotation_grace_period: str = duration(
        'How long the previous key keeps working after a rotation, e.g. "1h" ("0s": none).',
        "spec.rotationGracePeriod",
        durations.MAX_GRACE,
        "1h",
    )
    description: str | None = Field(
        None, description="Free text: who or what the key is for.", max_length=1024
    )
    limits: RateLimits | None = rate_limits("this key")

    crd_validations: ClassVar[list[JsonDict]] = [
        cel("!(has(self.ttl) && has(self.expiresAt))", "set either spec.ttl or spec.expiresAt, not both"),
    ]


class AIKeyStatus(Schema):
    """The key's state. The plaintext key is only ever in the Secret `secretName`."""

    phase: KeyPhase | None = Field(None, description="Pending (no key yet), Active, Expired or Disabled.")
    key_hash: str | None = Field(
        None, description="Hex SHA-256 of the current key.", pattern=r"^[0-9a-f]{64}$"
    )
    key_hint: str | None = Field(None, description="Prefix and last 4 characters of the key, safe to show.")
    previous_key_hash: str | None = Field(
        None,
        description="Hex SHA-256 of the key before the last rotation, valid until previousKeyValidUntil.",
    )
    previous_key_valid_until: dt.datetime | None = Field(
        None, description="End of the rotation grace period."
    )
    observed_rotation: int | None = Field(
        None, description="The spec.rotation the current key was minted for."
    )
    pending_key_hash: str | None = Field(
        None,
        description="Hex SHA-256 of the key the operator is about to write into the Secret, recorded "
        "before it writes (never accepted by the gateway). After an interrupted mint, the Secret's key "
        "is taken only if it is this one; any other key found there is replaced.",
        pattern=r"^[0-9a-f]{64}$",
    )
    secret_name: str | None = Field(None, description="Secret (owned by this AIKey) holding the key.")
    base_url: str | None = Field(
        None,
        alias="baseURL",
        description="The gateway's public OpenAI base URL to use the key with, as written into the "
        "Secret (OPENAI_BASE_URL) when the key was minted; `kubectl aikeys connect` reads it here "
        "once the Secret is gone.",
        max_length=2048,
    )
    created_at: dt.datetime | None = Field(None, description="When the first key was minted.")
    expires_at: dt.datetime | None = Field(None, description="When the key expires; empty if never.")
    last_used_at: dt.datetime | None = Field(None, description="Last request charged to this key.")
    spend: str | None = Field(None, description="USD charged to this key in the allocation's current period.")
    observed_generation: int | None = Field(None, description="The .metadata.generation last reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready: the key works.")


# --- AIProvider ---------------------------------------------------------------------------------


class ProviderType(StrEnum):
    OPENAI = "openai"
    AZURE_OPENAI = "azure-openai"


class SecretKeyRef(Schema):
    """A key in a Secret in the provider's namespace."""

    name: str = Field(description="Name of the Secret.", min_length=1, max_length=253)
    key: str = Field("apiKey", description="Key within the Secret's data that holds the API key.")


class AzureSettings(Schema):
    """Settings of Azure OpenAI endpoints."""

    api_version: str = Field(description='The api-version query parameter, e.g. "2024-10-21".', min_length=1)


class Tokenizer(StrEnum):
    AUTO = "auto"
    O200K_BASE = "o200k_base"
    CL100K_BASE = "cl100k_base"
    BYTES = "bytes"


class ResponsesAPI(StrEnum):
    NATIVE = "native"
    CHAT = "chat"


class ModelUse(StrEnum):
    CHAT = "chat"
    EMBEDDINGS = "embeddings"


class MaxTokensParameter(StrEnum):
    MAX_TOKENS = "max_tokens"
    MAX_COMPLETION_TOKENS = "max_completion_tokens"


BASE_URL_PATTERN = r"^https?://[^/?#@\s]+(/[^?#\s]*)?$"


class ModelBackend(Schema):
    """Another AIProvider's model that serves this model too."""

    model: str = Field(
        description='Its model ID, "<namespace>:<provider>/<model>". That provider must be shared with '
        "this provider's namespace.",
        min_length=3,
        max_length=300,
    )
    weight: int = Field(1, description="Share of first attempts (0: only as a fallback).", ge=0, le=1000)


class ProviderModel(Schema):
    """A model offered through the gateway, with its prices."""

    name: str = Field(
        description='Name in the model ID "<namespace>:<provider>/<name>" that clients send.',
        pattern=NAME_PATTERN,
    )
    upstream_name: str | None = Field(
        None,
        description="Model name sent to the upstream (default: name). For Azure: the deployment name.",
        min_length=1,
        max_length=256,
    )
    input_price_per_million: str = usd(
        'USD per million input tokens, a decimal string (e.g. "2.50").',
        "inputPricePerMillion",
        limits.MAX_PRICE_PER_MILLION_USD,
    )
    output_price_per_million: str = usd(
        'USD per million output tokens, a decimal string (e.g. "10.00").',
        "outputPricePerMillion",
        limits.MAX_PRICE_PER_MILLION_USD,
    )
    cached_input_price_per_million: str | None = usd(
        "USD per million input tokens read from the provider's prompt cache (OpenAI's \"cached "
        'input", Anthropic\'s cache reads), e.g. "0.125". Absent: the input price.',
        "cachedInputPricePerMillion",
        limits.MAX_PRICE_PER_MILLION_USD,
        optional=True,
    )
    cache_write_price_per_million: str | None = usd(
        "USD per million input tokens written to the provider's prompt cache for 5 minutes "
        "(Anthropic: 1.25x the input price). Absent: the input price.",
        "cacheWritePricePerMillion",
        limits.MAX_PRICE_PER_MILLION_USD,
        optional=True,
    )
    cache_write1h_price_per_million: str | None = usd(
        "USD per million input tokens written to the provider's prompt cache for 1 hour "
        "(Anthropic: 2x the input price). Absent: the input price.",
        "cacheWrite1hPricePerMillion",
        limits.MAX_PRICE_PER_MILLION_USD,
        optional=True,
        alias="cacheWrite1hPricePerMillion",  # not "cacheWrite1H…"
    )
    max_output_tokens: int | None = Field(
        None,
        description="Most output tokens one choice may generate. The gateway always sends the upstream "
        "a cap: a request's own max_tokens/max_completion_tokens if it is lower, else this (else 4096); "
        "larger request limits are clamped to it. The budget reservation uses the same bound.",
        ge=1,
        le=limits.MAX_OUTPUT_TOKENS,
    )
    context_window: int | None = Field(
        None,
        description="Most tokens the model reads in one request (its context window). Requests that refer "
        "to input the gateway cannot see (previous_response_id, a conversation, file ids or URLs) are "
        "bounded by it; without it such requests are refused with 400.",
        ge=1,
        le=limits.MAX_CONTEXT_TOKENS,
    )
    limits: RateLimits | None = rate_limits(
        "this model across every key and allocation that uses it (to stay inside a shared deployment's quota)"
    )
    weight: int = Field(
        1,
        description="Share of first attempts this model's own upstream gets among its backends.",
        ge=0,
        le=1000,
    )
    backends: list[ModelBackend] = Field(
        default_factory=list,
        description="Other upstreams that serve this model: the first attempt goes to one of them or to "
        "this model's own upstream by weight; on a connection failure, timeout, 429 or 5xx before any "
        "byte reached the client the next one is tried (never a duplicate answer, never a double charge). "
        "The reservation covers the dearest; the charge is at the price of the one that answered. "
        "Backends that keep failing are left out for a while.",
        json_schema_extra={"maxItems": 8},
    )
    tokenizer: Tokenizer = Field(
        Tokenizer.AUTO,
        description="How the gateway bounds a request's input tokens before sending it. o200k_base or "
        "cl100k_base: OpenAI's vocabularies (tiktoken) — only for models that really use them. bytes: "
        "one token per UTF-8 byte, an upper bound for every byte-level BPE (Llama, Qwen, Mistral, …). "
        "auto: the OpenAI vocabulary of the model's family when the provider is OpenAI itself "
        "(type azure-openai, or baseURL on api.openai.com), else bytes.",
    )
    responses_api: ResponsesAPI | None = Field(
        None,
        alias="responsesAPI",
        description="How the gateway serves POST /responses for this model. native: the upstream "
        "speaks the Responses API itself (stored responses, hosted tools, previous_response_id). chat: "
        "the gateway translates to chat completions and back (function tools, JSON schemas, images; "
        "hosted tools and previous_response_id get a 400). Default: native on api.openai.com, chat "
        "elsewhere.",
    )
    serves: ModelUse | None = Field(
        None,
        description="What the model is for: chat (chat completions, completions and the Responses API) "
        "or embeddings. The Connect page and `kubectl aikeys connect` name only chat models in the "
        "settings they give chat tools; the gateway does not refuse requests by it. Absent: embeddings "
        'when the name or upstreamName contains "embed" (any case), else chat.',
    )


class AIProviderSpec(Schema):
    """A model backend: an OpenAI-compatible endpoint or Azure OpenAI."""

    type: ProviderType = Field(
        ProviderType.OPENAI,
        description="openai (any OpenAI-compatible server: OpenAI, vLLM, Ollama, …) or azure-openai.",
    )
    base_url: str = Field(
        description="Base URL of the API, e.g. https://api.openai.com/v1 or https://NAME.openai.azure.com.",
        alias="baseURL",
        max_length=2048,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.matches(r'{BASE_URL_PATTERN}')",
                    "spec.baseURL must be an http(s) URL without user info, query or fragment, "
                    "e.g. https://api.openai.com/v1",
                )
            ]
        },
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret (same namespace) with the upstream API key. The Secret must be of type "
        "aikeys.dev/provider-credentials (an opt-in: no other Secret is ever sent upstream). Omit for "
        "keyless local servers.",
    )
    azure: AzureSettings | None = Field(None, description="Required when type is azure-openai.")
    models: list[ProviderModel] = Field(
        description="The models offered, by name.",
        json_schema_extra={
            "minItems": 1,
            "maxItems": 512,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    shared_with: list[str] = Field(
        default_factory=list,
        description='Namespaces whose keys may use this provider ("*": all). Its own namespace always may.',
        json_schema_extra={"items": {"type": "string", "pattern": NAMESPACE_OR_STAR}, "maxItems": 256},
    )
    stream_usage: bool = Field(
        True,
        description="Ask for a usage chunk in streams (stream_options.include_usage). Turn off for backends "
        "that reject it; streamed text is then counted instead.",
    )
    max_tokens_parameter: MaxTokensParameter | None = Field(
        None,
        description="The request field that carries the output cap the gateway sends on chat requests "
        "that set none: max_tokens or max_completion_tokens. Default: max_completion_tokens for OpenAI "
        "itself (type azure-openai, or baseURL on api.openai.com), max_tokens for other servers.",
    )
    timeout: str = duration(
        'Upstream request timeout, e.g. "600s".', "spec.timeout", durations.MAX_TIMEOUT, "600s", True
    )

    @field_validator("base_url")
    @classmethod
    def _plain_url(cls, value: str) -> str:
        if not re.match(BASE_URL_PATTERN, value):
            raise ValueError("baseURL must be an http(s) URL without user info, query or fragment")
        return value

    crd_validations: ClassVar[list[JsonDict]] = [
        cel(
            "self.type != 'azure-openai' || has(self.azure)",
            "spec.azure.apiVersion is required when type is azure-openai",
        ),
    ]


class AIProviderStatus(Schema):
    model_count: int | None = Field(None, description="Number of models offered.")
    model_ids: list[str] = Field(default_factory=list, description="The model IDs clients use.")
    observed_generation: int | None = Field(None, description="The .metadata.generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready: the credentials Secret exists and has the key."
    )


# --- the kinds ----------------------------------------------------------------------------------


class Kind:
    """Names, printer columns and the spec/status models of one custom resource kind."""

    def __init__(
        self,
        kind: str,
        plural: str,
        short: str,
        spec: type[Schema],
        status: type[Schema],
        description: str,
        columns: list[dict[str, Any]],
    ):
        self.kind, self.plural, self.short = kind, plural, short
        self.singular = kind.lower()
        self.spec, self.status, self.description, self.columns = spec, status, description, columns

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _col(
    name: str, path: str, type_: str = "string", description: str = "", priority: int = 0
) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if description:
        col["description"] = description
    if priority:
        col["priority"] = priority
    return col


_AGE = _col("Age", ".metadata.creationTimestamp", "date")

AIKEY = Kind(
    "AIKey",
    "aikeys",
    "aik",
    AIKeySpec,
    AIKeyStatus,
    "An API key for the aikeys gateway. The operator mints the key into a Secret owned by the AIKey "
    "and keeps only its SHA-256 in status; spend is charged to the referenced Allocation.",
    [
        _col("Allocation", ".spec.allocationRef.name", description="Allocation charged"),
        _col("Owner", ".spec.owner", description="The Kubernetes user the key belongs to"),
        _col("Phase", ".status.phase"),
        _col("Key", ".status.keyHint", description="Prefix and last 4 characters"),
        _col("Expires", ".status.expiresAt", description="Expiry (UTC)"),
        _col("Last Used", ".status.lastUsedAt", "date"),
        _col("Spend", ".status.spend", description="USD this period"),
        _col("Rate Req", ".spec.limits.requests", "integer", "Requests per rate window", priority=1),
        _col("Rate Tokens", ".spec.limits.tokens", "integer", "Tokens per rate window", priority=1),
        _col("Window", ".spec.limits.window", description="Rate window", priority=1),
        _AGE,
    ],
)
ALLOCATION = Kind(
    "Allocation",
    "allocations",
    "alloc",
    AllocationSpec,
    AllocationStatus,
    "A budget in USD per period that AIKeys draw from. Requests that could exceed it are refused "
    "with HTTP 402 before they reach a model.",
    [
        _col("Budget", ".spec.budget"),
        _col("Spent", ".status.spent"),
        _col("Remaining", ".status.remaining"),
        _col("Period", ".spec.period"),
        _col("Exhausted", '.status.conditions[?(@.type=="Exhausted")].status'),
        _col("Rate Req", ".spec.limits.requests", "integer", "Requests per rate window", priority=1),
        _col("Rate Tokens", ".spec.limits.tokens", "integer", "Tokens per rate window", priority=1),
        _col("Window", ".spec.limits.window", description="Rate window", priority=1),
        _AGE,
    ],
)
AIPROVIDER = Kind(
    "AIProvider",
    "aiproviders",
    "aip",
    AIProviderSpec,
    AIProviderStatus,
    "A model backend (OpenAI-compatible or Azure OpenAI) with its models and prices. Clients name "
    'its models "<namespace>:<provider>/<model>".',
    [
        _col("Type", ".spec.type"),
        _col("Models", ".status.modelCount", "integer"),
        _col("Shared", ".spec.sharedWith"),
        _col("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        _AGE,
    ],
)
KINDS = (AIKEY, ALLOCATION, AIPROVIDER)


def use_by_name(*names: str | None) -> ModelUse:
    """What a model is for, guessed from its names where its provider does not say: conservatively,
    a model whose name says embedding is never offered to a chat tool."""
    return ModelUse.EMBEDDINGS if any("embed" in (n or "").lower() for n in names) else ModelUse.CHAT


def model_use(model: ProviderModel) -> ModelUse:
    """What a model serves: its `serves`, else guessed from its name and upstream name."""
    return model.serves or use_by_name(model.name, model.upstream_name)


def model_id(namespace: str, provider: str, model: str) -> str:
    return f"{namespace}:{provider}/{model}"


def parse_model_id(value: str) -> tuple[str, str, str] | None:
    """`"team-a:openai/gpt-4o"` → ("team-a", "openai", "gpt-4o"); None when malformed."""
    owner, sep, rest = value.partition(":")
    provider, sep2, model = rest.partition("/")
    if not (sep and sep2 and owner and provider and model):
        return None
    return owner, provider, model
