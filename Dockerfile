# One image for web, workers and beat. The GPU worker gets CUDA from the same torch pin on a host
# with the NVIDIA container toolkit (docker-compose reserves the device).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends libglib2.0-0 && rm -rf /var/lib/apt/lists/*
# pg_dump and pg_restore for `manage.py backup` and `restore`, of the major version docker-compose's postgres service
# runs: a pg_dump older than the server refuses to dump it. From PostgreSQL's own apt repository (the distribution
# carries one version only).
ARG POSTGRES_CLIENT=16
RUN python -c "import urllib.request; urllib.request.urlretrieve('https://www.postgresql.org/media/keys/ACCC4CF8.asc', \
        '/usr/share/keyrings/pgdg.asc')" \
    && echo "deb [signed-by=/usr/share/keyrings/pgdg.asc] https://apt.postgresql.org/pub/repos/apt \
        $(. /etc/os-release && echo "$VERSION_CODENAME")-pgdg main" > /etc/apt/sources.list.d/pgdg.list \
    && apt-get update && apt-get install -y --no-install-recommends postgresql-client-${POSTGRES_CLIENT} \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# The static files are collected into the image, where the containers serve them from: STATIC_ROOT would
# otherwise follow DATA_DIR, /tmp/build here and /data at run time, where nothing is collected (every
# script and style sheet answered 404).
ENV STATIC_ROOT=/app/staticfiles
RUN DEBUG=1 DATA_DIR=/tmp/build python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "webapp.wsgi", "-c", "python:webapp.gunicorn_conf", "--bind", "0.0.0.0:8000", "--workers", "3"]
