# One image, both entrypoints: `aikeys-gateway` (default) and `aikeys-operator`.
#   docker build -t aikeys:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY aikeys aikeys
COPY operator operator
COPY gateway gateway
# the server extra: the operator's and the gateway's dependencies (the base install is the CLI)
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[server]'

FROM python:3.11-slim
RUN groupadd --gid 10001 aikeys && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin aikeys
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'aikeys[server]' && rm -rf /wheels
# tiktoken's vocabularies, unpacked at build time: the root filesystem is read-only at run time
ENV TIKTOKEN_CACHE_DIR=/opt/aikeys/tiktoken PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN python -c "from aikeys.tokenizers import seed_cache, encoding; seed_cache(); encoding('o200k_base'); encoding('cl100k_base')" \
 && chmod -R a+rX /opt/aikeys
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["aikeys-gateway"]
