# One image for every finpipe process: simulator, Dagster (webserver, daemon and the
# stream runs it launches: producer and Spark in local mode), Streamlit, and an optional
# Spark standalone master/worker. Kafka and MinIO use their upstream images.
FROM python:3.11-slim-bookworm

ARG UV_VERSION=0.13.9
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    FINPIPE_HOME=/var/lib/finpipe \
    FINPIPE_CACHE_DIR=/opt/finpipe-cache \
    DAGSTER_HOME=/var/lib/finpipe/dagster \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Java runs Spark; Maven fetches Spark's Kafka source at build time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven procps curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
# SPARK_JARS names the connector jars for every Spark session the image runs.
RUN uv sync --frozen --no-dev \
    && ln -s "$(finpipe-infra spark-jars | tail -n 1)" /opt/spark-jars \
    && rm -rf /root/.m2
ENV SPARK_JARS=/opt/spark-jars

EXPOSE 3000 8501 8765 4040
CMD ["dagster-webserver", "-w", "workspace.yaml", "-h", "0.0.0.0", "-p", "3000"]
