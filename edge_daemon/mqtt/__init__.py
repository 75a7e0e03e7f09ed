"""MQTT and Home Assistant: the daemon on a broker (``[mqtt] host``).

    topics.py     where everything of one daemon lives on the broker
    discovery.py  Home Assistant discovery configs, one per entity, one device
    inbound.py    a command message into a dispatch request, or why not
    client.py     the broker link: reconnects, last will, watches (aiomqtt)
    bridge.py     state stream out, commands in, stale entities swept

Like ``ctl``, this package reaches the daemon only through the command
dispatch and the state stream it is handed; it imports nothing of live/,
the daemon, audio, camera or voice. Import it only when a broker is set:
it pulls in aiomqtt and paho-mqtt.
"""

from .bridge import MqttBridge

__all__ = ["MqttBridge"]
