"""One trace from the client through the gateway to the workers, checked at a real OTLP/HTTP
receiver that decodes the protobuf export requests."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

import streamer
from streamer.protocol import AudioFormat
from tests.audio_gen import write_wav
from tests.conftest import BIN, free_port, wait_until

SPAN_KIND_SERVER, SPAN_KIND_CLIENT = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for rs in export.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            service = resource["service.name"]
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append({
                        "service": service, "resource": resource, "kind": s.kind,
                        "name": s.name, "trace": s.trace_id.hex(),
                        "id": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                        "attrs": {a.key: _value(a.value) for a in s.attributes}})
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def named(self, name: str) -> list[dict]:
        return [s for s in self.spans if s["name"] == name]


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


async def test_one_trace_from_client_span_to_worker_inference(tmp_path):
    receiver = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    otlp_port = site._server.sockets[0].getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMER_", "OTEL_"))}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_port}",
               OTEL_BSP_SCHEDULE_DELAY="100")
    port = free_port()
    gateway = await asyncio.create_subprocess_exec(
        str(BIN / "streamer-gateway"), "--port", str(port), "--workers", "2",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            async def healthy():
                try:
                    async with http.get(f"http://127.0.0.1:{port}/api/v1/health") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(healthy, within=30, what="the gateway")
        wav = tmp_path / "a.wav"
        write_wav(wav, AudioFormat(1, 16000, 16, False), 1.2)
        client = await asyncio.create_subprocess_exec(
            str(BIN / "streamer-client"), "-i", str(wav), "--addr",
            f"ws://127.0.0.1:{port}/api/v1/simple", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(client.communicate(), 30)
        assert client.returncode == 0, err.decode()
    finally:
        gateway.send_signal(signal.SIGINT)  # flushes the gateway's and the workers' spans
        await asyncio.wait_for(gateway.wait(), 30)

    def complete():
        return (receiver.named("client.stream") and receiver.named("session")
                and receiver.named("GET /api/v1/simple")
                and len(receiver.named("dispatch")) >= 3 and len(receiver.named("inference")) >= 3)

    try:
        await wait_until(complete, within=15, what="all spans at the receiver")
    finally:
        await runner.cleanup()
    client_span = receiver.named("client.stream")[0]
    session = receiver.named("session")[0]
    assert client_span["service"] == "streamer-client"
    assert session["service"] == "streamer-gateway"
    trace_id = client_span["trace"]
    assert session["trace"] == trace_id and session["parent"] == client_span["id"]
    dispatches = {s["id"]: s for s in receiver.named("dispatch")}
    assert all(d["trace"] == trace_id and d["parent"] == session["id"]
               for d in dispatches.values())
    assert any(d["parent"] == session["id"] for d in receiver.named("decode"))
    inferences = receiver.named("inference")
    for inf in inferences:
        assert inf["service"] == "streamer-worker"
        assert inf["trace"] == trace_id and inf["parent"] in dispatches
        attrs = inf["attrs"]
        assert attrs["session.id"] == session["attrs"]["session.id"]
        assert attrs["audio.channel"] == 0 and attrs["worker.batch_size"] >= 1
        assert attrs["worker.queue_wait_seconds"] >= 0 and "worker.id" in attrs
        assert attrs["worker.inference_seconds"] >= 0
    assert sorted(i["attrs"]["segment.start_time"] for i in inferences) == [0.0, 0.5, 1.0]
    # resources name their version; attributes follow the semantic conventions
    for span in (client_span, session, inferences[0]):
        assert span["resource"]["service.version"] == streamer.__version__
    url = f"ws://127.0.0.1:{port}/api/v1/simple"
    assert client_span["kind"] == SPAN_KIND_CLIENT
    assert client_span["attrs"] == {"url.full": url, "url.scheme": "ws",
                                    "server.address": "127.0.0.1", "server.port": port,
                                    "file.path": str(wav)}
    upgrades = receiver.named("GET /api/v1/simple")
    assert len(upgrades) == 1 and upgrades[0]["service"] == "streamer-gateway"
    assert upgrades[0]["kind"] == SPAN_KIND_SERVER
    attrs = upgrades[0]["attrs"]
    assert attrs["http.request.method"] == "GET" and attrs["http.route"] == "/api/v1/simple"
    assert attrs["url.path"] == "/api/v1/simple" and attrs["url.scheme"] == "http"
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == port
    assert attrs["client.address"] == "127.0.0.1"
    assert attrs["http.response.status_code"] == 101
