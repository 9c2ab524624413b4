"""A fake Hugging Face Text Embeddings Inference (TEI) server: POST /embed over real HTTP.

It answers TEI's wire format: {"inputs": str | [str], "normalize": bool, "truncate": bool}
in, a JSON list of vectors out; batches above `max_batch` get TEI's 413-style refusal (TEI
answers 413 with {"error", "error_type": "Validation"}). Vectors come from the hashing
embedder so they are deterministic. `fail_next` answers the next requests with these HTTP
statuses instead; `dimension_override` sends vectors of another size; `web_page` answers 200
with an HTML page, as another web server at a wrong PARLEY_TEI_URL would. GET /info names
`model_id` (None: 404, as a server that does not say).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from knowledge.embeddings import HashingEmbedder
from tests.fakes.server import BackgroundServer


class FakeTEI(BackgroundServer):
    def __init__(
        self, dimension: int = 64, max_batch: int = 32, model_id: str | None = "acme/hashing"
    ) -> None:
        self.embedder = HashingEmbedder(dimension)
        self.model_id = model_id
        self.info_requests = 0
        self.max_batch = max_batch
        self.fail_next: list[int] = []
        self.dimension_override: int | None = None
        self.web_page = False
        self.requests: list[dict[str, Any]] = []
        app = web.Application()
        app.router.add_post("/embed", self._embed)
        app.router.add_get("/info", self._info)
        super().__init__(app)

    async def _info(self, request: web.Request) -> web.Response:
        self.info_requests += 1
        if self.model_id is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(
            {"model_id": self.model_id, "model_type": {"embedding": {"pooling": "mean"}}}
        )

    async def _embed(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.fail_next:
            status = self.fail_next.pop(0)
            return web.json_response(
                {"error": "overloaded", "error_type": "Overloaded"}, status=status
            )
        if self.web_page:
            return web.Response(text="<html><body>Welcome</body></html>", content_type="text/html")
        inputs = body["inputs"]
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if len(texts) > self.max_batch:
            return web.json_response(
                {"error": f"batch size {len(texts)} > maximum allowed batch size {self.max_batch}",
                 "error_type": "Validation"},
                status=413,
            )  # fmt: skip
        vectors = [self.embedder.embed_one(text) for text in texts]
        if self.dimension_override is not None:
            vectors = [v[: self.dimension_override] for v in vectors]
        return web.json_response(vectors)
