# One image, both entrypoints: `aikeys-gateway` (default) and `aikeys-operator`; no dev tools (dev/ is not copied).
#   docker build -t aikeys:0.1.0 .
# BASE: any image with Python >= 3.11 and `python3 -m venv` — the official one by default; `make cluster`
# builds this file with buildah on a base made from Debian's python3 (dev/aikeys_dev/devstack/images.py).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
RUN python3 -m venv /opt/build
# Dependencies first, resolved by the image's own interpreter (markers such as redis-py's
# `python_version < "3.11.3"` differ between 3.11 releases); cached until pyproject.toml changes.
# The server extra: the operator's and the gateway's dependencies (the base install is the CLI).
COPY pyproject.toml ./
RUN mkdir aikeys operator gateway && touch README.md \
 && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels '.[server]' && rm /wheels/aikeys-*.whl \
 && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /build-wheels 'setuptools>=77'
COPY README.md ./
COPY aikeys aikeys
COPY operator operator
COPY gateway gateway
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-index --find-links /build-wheels --wheel-dir /app .

FROM ${BASE}
RUN groupadd --gid 10001 aikeys && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin aikeys
# A virtualenv works on every base (Debian's python3 refuses system-wide pip installs, PEP 668) and
# gives `python` as well as `python3`.
RUN python3 -m venv /opt/aikeys/venv
ENV PATH=/opt/aikeys/venv/bin:$PATH
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl && rm -rf /wheels
COPY --from=build /app /app
RUN pip install --no-cache-dir --no-index --no-deps /app/*.whl && rm -rf /app
# tiktoken's vocabularies, unpacked at build time: the root filesystem is read-only at run time
ENV TIKTOKEN_CACHE_DIR=/opt/aikeys/tiktoken PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN python -c "from aikeys.tokenizers import seed_cache, encoding; seed_cache(); encoding('o200k_base'); encoding('cl100k_base')" \
 && chmod -R a+rX /opt/aikeys/tiktoken
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["aikeys-gateway"]
