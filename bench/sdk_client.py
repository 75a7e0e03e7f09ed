"""The same session through Google's google-genai SDK (``client.aio.live``):
16 kHz audio up in 40 ms chunks, paced, while "pressed"; a JPEG a second;
every reply chunk received as the SDK's LiveServerMessage and dropped.

Pointed at the fake with ``http_options.base_url``. With an API key the SDK
always dials ``wss://`` (``BaseApiClient._websocket_base_url`` replaces the
scheme), so the runner serves the fake over TLS for every client and this one
trusts it through ``SSL_CERT_FILE``, which the SDK reads itself. Driven on
stdin by the runner (``press``, ``release``, ``quit``), like raw_client.py.

    SDK_PYTHON bench/sdk_client.py BASE_URL JPEG RESULT_JSON   (key in $GEMINI_API_KEY)
"""

import asyncio
import json
import os
import sys
import time

from google import genai
from google.genai import types

CHUNK = 16000 * 2 * 40 // 1000  # 40 ms of 16 kHz s16le mono
MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"


async def main(base_url: str, jpeg_path: str, result_path: str) -> None:
    jpeg = open(jpeg_path, "rb").read()  # noqa: ASYNC230, SIM115 - once, before the session
    received: list[tuple[int, float]] = []
    pressed = asyncio.Event()
    client = genai.Client(
        api_key=os.environ["GEMINI_API_KEY"],
        http_options=types.HttpOptions(base_url=base_url, api_version="v1beta"),
    )
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(disabled=True)
        ),
    )
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        print("READY", flush=True)

        async def receive_loop() -> None:
            while True:  # receive() ends at each turnComplete
                async for message in session.receive():
                    content = message.server_content
                    if content and content.model_turn and content.model_turn.parts:
                        for part in content.model_turn.parts:
                            if part.inline_data and part.inline_data.data:
                                seq = int.from_bytes(part.inline_data.data[:4], "little")
                                received.append((seq, time.monotonic()))

        async def send_audio() -> None:
            silence = bytes(CHUNK)
            loop = asyncio.get_running_loop()
            while True:
                await pressed.wait()
                next_at = loop.time()
                while pressed.is_set():
                    await session.send_realtime_input(
                        audio=types.Blob(data=silence, mime_type="audio/pcm;rate=16000")
                    )
                    next_at += 0.040
                    await asyncio.sleep(max(0.0, next_at - loop.time()))

        async def send_video() -> None:
            while True:
                await session.send_realtime_input(
                    video=types.Blob(data=jpeg, mime_type="image/jpeg")
                )
                await asyncio.sleep(1.0)

        async def commands() -> None:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while line := (await reader.readline()).decode().strip():
                if line == "press":
                    await session.send_realtime_input(activity_start=types.ActivityStart())
                    pressed.set()
                elif line == "release":
                    pressed.clear()
                    await session.send_realtime_input(activity_end=types.ActivityEnd())
                elif line == "quit":
                    return

        tasks = [asyncio.create_task(c()) for c in (receive_loop, send_audio, send_video)]
        await commands()
        for task in tasks:
            task.cancel()
    with open(result_path, "w") as f:  # noqa: ASYNC230 - the session is over
        json.dump({"audio": received}, f)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
