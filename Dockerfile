# One image for every smsmta service; the command picks the service:
#   docker run smsmta mta --config /etc/smsmta/mid.yaml
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --system --home-dir /var/lib/smsmta --create-home smsmta

WORKDIR /opt/smsmta
COPY pyproject.toml README.md ./
COPY smpp smpp
COPY smsmta smsmta
COPY mta mta
COPY sms_process sms_process
COPY midsourcing midsourcing
COPY migrations migrations
RUN pip install . && rm -rf /root/.cache

COPY config /etc/smsmta
USER smsmta
ENTRYPOINT ["smsmta"]
CMD ["--help"]
