# agentir daemon, CPU only. Build: docker build -t agentir .   Run: docker run -p 8080:8080 -v agentir-data:/data agentir
# torch comes from PyTorch's CPU index first, so pip never pulls the CUDA build (and its 1 GB of nvidia-* wheels).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=2

RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY agentir ./agentir
COPY actors ./actors
COPY agent_policies ./agent_policies
COPY bus ./bus
COPY kernels ./kernels
COPY toolbox ./toolbox
RUN pip install . && rm -rf /src

RUN useradd --create-home --uid 1000 agentir && mkdir -p /data && chown agentir /data
USER agentir
WORKDIR /home/agentir
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
# JSON logs on stderr; SIGTERM finishes or re-queues running jobs (docker stop sends it).
ENTRYPOINT ["agentir", "serve", "--host", "0.0.0.0", "--port", "8080", "--data", "/data"]
