"""A fast, deterministic stand-in for an OpenAI-compatible model server.

Used by the tests, the dev stack and the benchmarks in place of a real provider. It speaks
the OpenAI wire format (JSON bodies, SSE streams ending in `data: [DONE]`, error objects) on
`/v1/...` and Azure OpenAI's `/openai/deployments/{name}/...`: chat completions, completions,
embeddings, models, and the Responses API (`responses`: typed `event:` streams, stored
responses, `previous_response_id`). It counts tokens deterministically (`tokens`) and answers
what the request asks for (`replies`): tool calls when tools are offered and the user says
"tool" or "weather", results mentioned back, JSON that fits a requested schema (`schema`),
reasoning tokens for a reasoning effort, and a prompt prefix it has answered before as cached
tokens, as OpenAI's prompt caching does (`cache`). It can be told to omit usage, add latency,
fail or break streams, ignore max_tokens, misreport usage, force tool calls or reasoning,
stall before the usage tail, frame SSE differently or cache small prompts (`behaviour.Behaviour`),
through `PUT /_mock/config`. `GET /_mock/requests` shows what it received.

The server (`server`) puts together the steps every route shares (`core`: log, check, bill,
answer), the classic API's routes (`chat`), the Responses API's (`responses_api`) and its own
(`control`); `checks` reads request fields as OpenAI does, `wire` and `responses` build what is sent.
"""
