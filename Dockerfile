FROM python:3.11-slim
WORKDIR /opt/botd
COPY pyproject.toml README.md config.toml ./
COPY botd ./botd
RUN pip install --no-cache-dir . && useradd --system --home /opt/botd botd
USER botd
ENV BOTD_CONFIG=/opt/botd/config.toml
EXPOSE 8080
CMD ["botd", "run"]
