# finsentry worker / scheduler image. For a GPU host, build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11.14-slim-bookworm
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /app
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} torch==2.13.0
COPY pyproject.toml README.md alembic.ini ./
COPY config config
COPY finsentry finsentry
COPY models models
COPY schemas schemas
COPY workers workers
COPY migrations migrations
COPY data data
RUN pip install --no-cache-dir -e . && pip check
EXPOSE 9108 9107
ENTRYPOINT ["finsentry"]
CMD ["worker"]
