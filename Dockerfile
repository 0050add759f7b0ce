# authserver image: slim, non-root, no build tools in the final stage.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authserver ./authserver
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app authserver
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini gunicorn.conf.py deploy/serve.sh ./
COPY migrations ./migrations
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 AUTHSERVER_ENV=production
USER authserver
EXPOSE 8000
# granian, one worker per core (serve.sh; docs/PERFORMANCE.md says why). gunicorn.conf.py is
# there for those who prefer gunicorn: `gunicorn -c gunicorn.conf.py 'authserver:create_app()'`.
CMD ["./serve.sh"]
