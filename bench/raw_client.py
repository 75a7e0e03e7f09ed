"""The baseline: a minimal Gemini Live client in the seed guide's style
(websockets + json + base64, nothing else), doing the benchmark session's work
and no more: 16 kHz audio up in 40 ms chunks, paced, while "pressed"; a JPEG a
second; every reply chunk decoded at 24 kHz and dropped (no sound card).

It differs from the guide only where the guide cannot work: the first message
is ``setup`` (the guide's ``config`` is refused), and with push-to-talk it
sends activityStart/activityEnd. Driven on stdin by the benchmark runner
(``press``, ``release``, ``quit``); on ``quit`` it writes, as JSON, when each
reply chunk (by the sequence number in its first four bytes) reached it.
``--idle`` sends no frames: the bare client idling on its link.

    python bench/raw_client.py URL JPEG RESULT_JSON [--idle]   (key in $GEMINI_API_KEY)

Deliberately imports nothing from edge_daemon: what it costs is its own.
"""

import asyncio
import base64
import json
import os
import sys
import time

import websockets

CHUNK = 16000 * 2 * 40 // 1000  # 40 ms of 16 kHz s16le mono


async def main(url: str, jpeg_path: str, result_path: str, idle: bool = False) -> None:
    api_key = os.environ["GEMINI_API_KEY"]
    jpeg = open(jpeg_path, "rb").read()  # noqa: ASYNC230, SIM115 - once, before the session
    received: list[tuple[int, float]] = []
    pressed = asyncio.Event()

    async with websockets.connect(f"{url}?key={api_key}", max_size=16 * 2**20) as websocket:
        setup = {
            "setup": {
                "model": "models/gemini-2.5-flash-native-audio-preview-12-2025",
                "generationConfig": {"responseModalities": ["AUDIO"]},
                "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}},
            }
        }
        await websocket.send(json.dumps(setup))
        while "setupComplete" not in json.loads(await websocket.recv()):
            pass
        print("READY", flush=True)

        async def receive_loop() -> None:
            async for message in websocket:
                response = json.loads(message)
                if "serverContent" in response:
                    server_content = response["serverContent"]
                    if "modelTurn" in server_content and "parts" in server_content["modelTurn"]:
                        for part in server_content["modelTurn"]["parts"]:
                            if "inlineData" in part:
                                audio = base64.b64decode(part["inlineData"]["data"])
                                seq = int.from_bytes(audio[:4], "little")
                                received.append((seq, time.monotonic()))

        async def send_audio() -> None:
            silence = bytes(CHUNK)
            loop = asyncio.get_running_loop()
            while True:
                await pressed.wait()
                next_at = loop.time()
                while pressed.is_set():
                    encoded_data = base64.b64encode(silence).decode("utf-8")
                    audio_message = {
                        "realtimeInput": {
                            "audio": {"data": encoded_data, "mimeType": "audio/pcm;rate=16000"}
                        }
                    }
                    await websocket.send(json.dumps(audio_message))
                    next_at += 0.040
                    await asyncio.sleep(max(0.0, next_at - loop.time()))

        async def send_video() -> None:
            while True:
                encoded_data = base64.b64encode(jpeg).decode("utf-8")
                video_message = {
                    "realtimeInput": {"video": {"data": encoded_data, "mimeType": "image/jpeg"}}
                }
                await websocket.send(json.dumps(video_message))
                await asyncio.sleep(1.0)

        async def commands() -> None:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while line := (await reader.readline()).decode().strip():
                if line == "press":
                    await websocket.send(json.dumps({"realtimeInput": {"activityStart": {}}}))
                    pressed.set()
                elif line == "release":
                    pressed.clear()
                    await websocket.send(json.dumps({"realtimeInput": {"activityEnd": {}}}))
                elif line == "quit":
                    return

        loops = (receive_loop, send_audio) if idle else (receive_loop, send_audio, send_video)
        tasks = [asyncio.create_task(c()) for c in loops]
        await commands()
        for task in tasks:
            task.cancel()
    with open(result_path, "w") as f:  # noqa: ASYNC230 - the session is over
        json.dump({"audio": received}, f)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4], idle="--idle" in sys.argv[4:]))
