"""``take_photo``: the model asks to see, and gets a fresh frame in the live video input.

The picture itself travels the way camera frames always do (``send_frame``,
realtimeInput video), not inside the function response: the response only
says that it was sent and how big it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..camera import Camera
from .registry import Tool, function_declaration
from .schema import validate_args

NAME = "take_photo"
DESCRIPTION = (
    "Take a photo with the device's camera right now and add it to the live video input, "
    "so you can see what is in front of the device. Use it when the user asks you to look at, "
    "read, identify or describe something, or when seeing would help you answer. The image "
    "arrives as a video frame shortly after this call returns."
)


def take_photo_tool(
    camera: Camera,
    send_frame: Callable[[bytes], Awaitable[None]],
    *,
    timeout_s: float = 10.0,
    refusal: Callable[[], str] = lambda: "",
) -> Tool:
    """A Tool that captures one fresh frame, sends it with ``send_frame`` and
    returns ``{"sent": true, "width": w, "height": h}``. ``refusal`` says why a
    photo may not be taken now ("" when it may): camera.only_while_talking
    holds for the model's photos as for the ticker's. The frame goes the way
    every frame goes, so the Live API's one frame a second holds too."""

    async def run(args: Mapping[str, Any]) -> Mapping[str, Any]:
        from ..camera.image import image_size  # Pillow: loaded with the camera, not before

        validate_args(NAME, None, args)  # no parameters: anything else is the model's mistake
        why = refusal()
        if why:
            raise ValueError(f"{NAME}: refused: {why}. No photo was taken.")
        jpeg = await camera.capture()
        width, height = image_size(jpeg)
        await send_frame(jpeg)
        return {"sent": True, "width": width, "height": height}

    return Tool(
        name=NAME,
        declaration=function_declaration(NAME, DESCRIPTION),
        run=run,
        timeout_s=timeout_s,
    )
