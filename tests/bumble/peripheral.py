"""LE peripheral with one characteristic readable only over an authenticated link,
one that notifies a counter (+1 per notification, every 20 ms) to subscribers, and a
note that an encrypted link may write and read back.

Usage: python peripheral.py --transport tcp-client:127.0.0.1:9001
                            [--name EncPeripheral] [--address F1:F1:F1:F1:F1:F1]
                            [--pairing passkey|numeric]

Prints JSON lines on stdout: advertising, connected, disconnected, error.
Runs until killed; exits 1 if the HCI transport is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import bumble.logging
from bumble import data_types
from bumble.core import AdvertisingData
from bumble.device import Connection, Device, DeviceConfiguration
from bumble.gatt import Characteristic, Service
from bumble.transport import open_transport

from testbed_common import (
    COUNTER_CHARACTERISTIC_UUID,
    NOTE_CHARACTERISTIC_UUID,
    COUNTER_PERIOD,
    DEFAULT_PERIPHERAL_ADDRESS,
    DEFAULT_PERIPHERAL_NAME,
    PAIRING_METHODS,
    SECRET_CHARACTERISTIC_UUID,
    SECRET_VALUE,
    SERVICE_UUID,
    emit,
    io_capability,
    pairing_config,
)


def secret_service(counter: Characteristic) -> Service:
    return Service(
        SERVICE_UUID,
        [
            Characteristic(
                SECRET_CHARACTERISTIC_UUID,
                Characteristic.Properties.READ,
                Characteristic.Permissions.READ_REQUIRES_ENCRYPTION
                | Characteristic.Permissions.READ_REQUIRES_AUTHENTICATION,
                SECRET_VALUE,
            ),
            counter,
            Characteristic(
                NOTE_CHARACTERISTIC_UUID,
                Characteristic.Properties.READ | Characteristic.Properties.WRITE,
                Characteristic.Permissions.READ_REQUIRES_ENCRYPTION
                | Characteristic.Permissions.WRITE_REQUIRES_ENCRYPTION,
                b'',
            ),
        ],
    )


def counter_characteristic() -> Characteristic:
    return Characteristic(
        COUNTER_CHARACTERISTIC_UUID,
        Characteristic.Properties.READ | Characteristic.Properties.NOTIFY,
        Characteristic.Permissions.READ_REQUIRES_ENCRYPTION,
        bytes(4),
    )


async def notify_counter(device: Device, counter: Characteristic) -> None:
    """Every COUNTER_PERIOD, notify the next counter value to the subscribers.

    A value goes out only when somebody is subscribed, and the counter moves on
    only when it went out, so a subscriber sees every value, in order: a gap or a
    repeat on its side is a notification the path between lost or doubled.
    """
    n = 0
    while True:
        await asyncio.sleep(COUNTER_PERIOD)
        subscribed = any(
            counter.handle in cccds and cccds[counter.handle]
            for cccds in device.gatt_server.subscribers.values()
        )
        if subscribed:
            await device.notify_subscribers(counter, n.to_bytes(4, 'little'))
            n += 1


def advertising_data(name: str) -> bytes:
    flags = (
        AdvertisingData.Flags.LE_GENERAL_DISCOVERABLE_MODE
        | AdvertisingData.Flags.BR_EDR_NOT_SUPPORTED
    )  # 0x06
    return bytes(
        AdvertisingData([data_types.Flags(flags), data_types.CompleteLocalName(name)])
    )


def on_connection(connection: Connection) -> None:
    emit('connected', handle=connection.handle, peer=str(connection.peer_address))

    def on_disconnection(reason: int) -> None:
        emit('disconnected', reason=reason)

    connection.on(connection.EVENT_DISCONNECTION, on_disconnection)


async def run(transport_spec: str, name: str, address: str, pairing: str) -> int:
    async with await open_transport(transport_spec) as transport:
        config = DeviceConfiguration()
        config.load_from_dict({'name': name, 'address': address})
        device = Device.from_config_with_hci(config, transport.source, transport.sink)
        counter = counter_characteristic()
        device.add_service(secret_service(counter))
        device.pairing_config_factory = lambda _connection: pairing_config(
            io_capability(pairing, central=False)
        )
        device.on(device.EVENT_CONNECTION, on_connection)

        await device.power_on()
        await device.start_advertising(
            auto_restart=True, advertising_data=advertising_data(name)
        )
        emit('advertising', name=name, address=address)
        notifier = asyncio.create_task(notify_counter(device, counter))

        try:
            await transport.source.terminated
            message = 'HCI transport lost'
        except Exception as error:  # the transport reports why it ended
            message = f'HCI transport lost: {type(error).__name__}: {error}'
        notifier.cancel()
        emit('error', message=message)
        return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--transport', required=True, help='bumble transport spec')
    parser.add_argument('--name', default=DEFAULT_PERIPHERAL_NAME)
    parser.add_argument('--address', default=DEFAULT_PERIPHERAL_ADDRESS)
    parser.add_argument(
        '--pairing',
        choices=PAIRING_METHODS,
        default='passkey',
        help='LE SC method: passkey (default; this side displays the passkey) or '
        'numeric (Numeric Comparison, confirmed automatically)',
    )
    args = parser.parse_args()

    bumble.logging.setup_basic_logging('WARNING')
    try:
        sys.exit(
            asyncio.run(run(args.transport, args.name, args.address, args.pairing))
        )
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == '__main__':
    main()
