# Parley: one image for `parley serve` and `parley worker`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY parley ./parley
COPY bots ./bots
COPY workers ./workers
COPY llm ./llm
COPY privacy ./privacy
COPY guardrails ./guardrails
RUN python -m venv /opt/parley && /opt/parley/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 parley
COPY --from=build /opt/parley /opt/parley
ENV PATH=/opt/parley/bin:$PATH PYTHONUNBUFFERED=1
USER parley
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,os; urllib.request.urlopen('http://127.0.0.1:'+os.environ.get('PARLEY_PORT','3000')+'/healthz')"
ENTRYPOINT ["parley"]
CMD ["serve"]
