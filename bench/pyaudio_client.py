"""The fair anchor: the seed guide's raw WebSocket loop (as in raw_client.py)
plus real sound, captured and played with PyAudio the way Google's Live API
Python starter does it: blocking PyAudio streams read and written through
``asyncio.to_thread``, CHUNK_SIZE = 1024 frames, 16 kHz up, 24 kHz back, an
``asyncio.Queue`` between each stream and the socket. That is what a user
would write instead of installing edge-daemon, and the floor for a device
that really does audio.

Where it differs from the starter, it is only to do the benchmark session's
work: push-to-talk (``activityStart``/``activityEnd`` around the audio sent
while "pressed"; the mic is read all along, as the starter reads it, and
dropped between turns), the same JPEG a second as the other clients (the
starter's camera grab would cost OpenCV), no SDK (the seed guide's
websockets+json+base64), and the queue of unplayed audio emptied on
``interrupted`` (the starter empties it at every turn's end, which would cut
the tail of each answer the fake streams in real time).

    python bench/pyaudio_client.py URL JPEG RESULT_JSON [--idle]   (key in $GEMINI_API_KEY)

Driven on stdin by the runner (``press``, ``release``, ``quit``), like
raw_client.py. ``--idle`` sends no frames (the idle benchmark). Deliberately
imports nothing from edge_daemon: what it costs is its own.
"""

import asyncio
import base64
import json
import os
import sys
import time

import pyaudio
import websockets

FORMAT = pyaudio.paInt16
CHANNELS = 1
SEND_SAMPLE_RATE = 16000
RECEIVE_SAMPLE_RATE = 24000
CHUNK_SIZE = 1024

pya = pyaudio.PyAudio()


class AudioLoop:
    def __init__(self, websocket, jpeg: bytes, video: bool) -> None:
        self.websocket = websocket
        self.jpeg = jpeg
        self.video = video
        self.audio_in_queue: asyncio.Queue = asyncio.Queue()
        self.out_queue: asyncio.Queue = asyncio.Queue(maxsize=5)
        self.pressed = False
        self.received: list[tuple[int, float]] = []

    async def send_realtime(self) -> None:
        while True:
            msg = await self.out_queue.get()
            await self.websocket.send(json.dumps(msg))

    async def listen_audio(self) -> None:
        mic_info = pya.get_default_input_device_info()
        self.audio_stream = await asyncio.to_thread(
            pya.open,
            format=FORMAT,
            channels=CHANNELS,
            rate=SEND_SAMPLE_RATE,
            input=True,
            input_device_index=mic_info["index"],
            frames_per_buffer=CHUNK_SIZE,
        )
        kwargs = {"exception_on_overflow": False}
        while True:
            data = await asyncio.to_thread(self.audio_stream.read, CHUNK_SIZE, **kwargs)
            if self.pressed:
                encoded = base64.b64encode(data).decode("utf-8")
                audio = {"data": encoded, "mimeType": "audio/pcm;rate=16000"}
                await self.out_queue.put({"realtimeInput": {"audio": audio}})

    async def send_video(self) -> None:
        while True:
            encoded = base64.b64encode(self.jpeg).decode("utf-8")
            await self.out_queue.put(
                {"realtimeInput": {"video": {"data": encoded, "mimeType": "image/jpeg"}}}
            )
            await asyncio.sleep(1.0)

    async def receive_audio(self) -> None:
        async for message in self.websocket:
            response = json.loads(message)
            server_content = response.get("serverContent")
            if server_content is None:
                continue
            if "modelTurn" in server_content and "parts" in server_content["modelTurn"]:
                for part in server_content["modelTurn"]["parts"]:
                    if "inlineData" in part:
                        data = base64.b64decode(part["inlineData"]["data"])
                        self.audio_in_queue.put_nowait(data)
                        self.received.append((int.from_bytes(data[:4], "little"), time.monotonic()))
            if server_content.get("interrupted"):
                # For interruptions to work, stop playback: empty out the queue.
                while not self.audio_in_queue.empty():
                    self.audio_in_queue.get_nowait()

    async def play_audio(self) -> None:
        stream = await asyncio.to_thread(
            pya.open, format=FORMAT, channels=CHANNELS, rate=RECEIVE_SAMPLE_RATE, output=True
        )
        while True:
            bytestream = await self.audio_in_queue.get()
            await asyncio.to_thread(stream.write, bytestream)

    async def commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            if line == "press":
                await self.out_queue.put({"realtimeInput": {"activityStart": {}}})
                self.pressed = True
            elif line == "release":
                self.pressed = False
                await self.out_queue.put({"realtimeInput": {"activityEnd": {}}})
            elif line == "quit":
                return


async def main(url: str, jpeg_path: str, result_path: str, video: bool) -> None:
    api_key = os.environ["GEMINI_API_KEY"]
    jpeg = open(jpeg_path, "rb").read()  # noqa: ASYNC230, SIM115 - once, before the session
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
        audio = AudioLoop(websocket, jpeg, video)
        loops = [audio.send_realtime, audio.listen_audio, audio.receive_audio, audio.play_audio]
        if video:
            loops.append(audio.send_video)
        tasks = [asyncio.create_task(c()) for c in loops]
        print("READY", flush=True)
        await audio.commands()
        for task in tasks:
            task.cancel()
    with open(result_path, "w") as f:  # noqa: ASYNC230 - the session is over
        json.dump({"audio": audio.received}, f)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4], video="--idle" not in sys.argv[4:]))
