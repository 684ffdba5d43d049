# The backend image: `python -m backend serve` by default, `python -m backend worker` for RQ workers.

# The compiled half of backend/families/hashing.py, built where a C compiler is (the slim image has none).
FROM python:3.11 AS native
WORKDIR /src
COPY backend/__init__.py backend/native.py backend/_compiled.c ./backend/
RUN python -m backend.native

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MODEL_DIR=/data/models
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt && useradd --create-home --uid 10001 backend \
    && mkdir -p /data/models && chown -R backend /data
COPY backend ./backend
COPY --from=native /src/backend/_compiled.*.so ./backend/
USER backend
EXPOSE 9090
CMD ["python", "-m", "backend", "serve"]
