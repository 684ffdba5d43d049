# The backend image: `python -m backend serve` by default, `python -m backend worker` for RQ workers.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MODEL_DIR=/data/models
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt && useradd --create-home --uid 10001 backend \
    && mkdir -p /data/models && chown -R backend /data
COPY backend ./backend
USER backend
EXPOSE 9090
CMD ["python", "-m", "backend", "serve"]
