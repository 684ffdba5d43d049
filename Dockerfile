FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MODEL_DIR=/data/models PORT=9090 PROMETHEUS_MULTIPROC_DIR=/tmp/lsb-metrics
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt && useradd --create-home --uid 10001 backend \
    && mkdir -p /data/models && chown -R backend /data
COPY backend ./backend
USER backend
EXPOSE 9090
CMD ["sh", "-c", "exec python -m backend serve --workers ${WORKERS:-2}"]
