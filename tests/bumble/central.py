"""LE central: scan, connect, read before pairing, pair (passkey), read encrypted.

Usage: python central.py --transport SPEC --target EncPeripheral
                         [--hold] [--vendor-probe] [--write TEXT] [--notifications N] [--timeout S]
                         [--pairing passkey|numeric]

SPEC is any bumble transport, e.g. android-netsim:127.0.0.1:8877,name=phone-1.
Prints one JSON line per milestone on stdout (see README.md). Exits 0 after
"done" (or after "quit" with --hold), 1 on any failure or on --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import bumble.logging
from bumble import hci
from bumble.att import ATT_Error
from bumble.core import UUID, AdvertisingData, BaseError
from bumble.device import Advertisement, Connection, Device, DeviceConfiguration, Peer
from bumble.gatt_client import CharacteristicProxy
from bumble.host import Host
from bumble.transport import open_transport
from bumble.transport.common import Transport

from testbed_common import (
    COUNTER_CHARACTERISTIC_UUID,
    NOTE_CHARACTERISTIC_UUID,
    SECRET_CHARACTERISTIC_UUID,
    PAIRING_METHODS,
    SERVICE_UUID,
    elapsed,
    emit,
    io_capability,
    pairing_config,
)

_T = TypeVar('_T')

# Broadcom Write_BD_ADDR (OGF 0x3F, OCF 0x001): a vendor command that a relay's
# policy is expected to refuse. Its parameter is a 6-byte address.
VENDOR_PROBE_OPCODE = 0xFC01
VENDOR_PROBE_PARAMETERS = bytes.fromhex('665544332211')
# Android's HCI command timeout (kHciTimeoutMs).
VENDOR_PROBE_TIMEOUT = 2.0
DISCONNECT_TIMEOUT = 5.0


class Failure(Exception):
    """A step failed; the message goes into the "error" event."""


class VendorCommand(hci.HCI_SyncCommand[hci.HCI_GenericReturnParameters]):
    """An unregistered vendor-specific command carrying raw parameter bytes."""


class HciEventTap:
    """Packet sink between the transport source and the Host.

    bumble's Host has no handler for HCI Hardware Error (event 0x10): it only logs
    "Ignoring event". This tap reports it, then forwards every packet unchanged.
    """

    def __init__(self, host: Host) -> None:
        self.host = host

    def on_packet(self, packet: bytes) -> None:
        if (
            len(packet) >= 4
            and packet[0] == hci.HCI_EVENT_PACKET
            and packet[1] == hci.HCI_HARDWARE_ERROR_EVENT
        ):
            emit('hardware_error', code=packet[3])
        self.host.on_packet(packet)

    def on_transport_lost(self) -> None:
        self.host.on_transport_lost()


class Central:
    def __init__(self, transport: Transport, args: argparse.Namespace) -> None:
        self.args = args
        self.transport_lost = transport.source.terminated
        self.connection_dropped: asyncio.Future[int] = (
            asyncio.get_running_loop().create_future()
        )
        self.closing = False
        self.connection: Connection | None = None
        self.device = Device.from_config_with_hci(
            DeviceConfiguration(name='central'), transport.source, transport.sink
        )
        transport.source.set_packet_sink(HciEventTap(self.device.host))
        self.device.pairing_config_factory = lambda _connection: pairing_config(
            io_capability(args.pairing, central=True)
        )

    async def guard(self, awaitable: Awaitable[_T]) -> _T:
        """Await, but fail as soon as the transport or the connection is lost."""
        task = asyncio.ensure_future(awaitable)
        watched: set[asyncio.Future[Any]] = {
            task,
            self.transport_lost,
            self.connection_dropped,
        }
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if task.done():
            return task.result()
        if self.transport_lost.done():
            error = self.transport_lost.exception()
            raise Failure(
                'HCI transport lost' + (f': {describe(error)}' if error else '')
            )
        raise Failure(f'connection dropped (reason {self.connection_dropped.result()})')

    async def until_done(self) -> CharacteristicProxy[bytes]:
        await self.guard(self.device.power_on())
        emit('powered')

        if self.args.vendor_probe:
            await self.vendor_probe()

        address = await self.scan(self.args.target)
        emit('found', address=str(address))

        connection = await self.guard(self.device.connect(address))
        self.connection = connection
        connection.on(connection.EVENT_DISCONNECTION, self.on_disconnection)
        emit('connected', handle=connection.handle)

        characteristic = await self.discover(connection)
        emit('discovered')

        try:
            await self.guard(characteristic.read_value())
            emit('read_before_pairing', result='ok', code=0)
        except ATT_Error as error:
            emit('read_before_pairing', result=error.error_name, code=error.error_code)

        await self.guard(connection.pair())
        emit('paired')
        emit(
            'encrypted',
            encrypted=connection.is_encrypted,
            authenticated=connection.authenticated,
        )
        if not connection.is_encrypted:
            raise Failure('link not encrypted after pairing')

        value = await self.guard(characteristic.read_value())
        emit('value', value=value.decode('utf-8', errors='replace'))
        if self.args.write:
            await self.write_and_read_back(connection, self.args.write)
        if self.args.notifications:
            await self.count_notifications(connection, self.args.notifications)
        emit('done')
        return characteristic

    async def write_and_read_back(self, connection: Connection, text: str) -> None:
        """Write `text` to the note (with response) and read it back."""
        note = await self.characteristic(connection, NOTE_CHARACTERISTIC_UUID)
        await self.guard(note.write_value(text.encode(), with_response=True))
        back = await self.guard(note.read_value())
        emit('written', value=back.decode('utf-8', errors='replace'))

    async def count_notifications(self, connection: Connection, want: int) -> None:
        """Subscribe to the counter and take `want` notifications; report whether any
        value was skipped (a gap) or came again (a duplicate), in arrival order."""
        counter = await self.characteristic(connection, COUNTER_CHARACTERISTIC_UUID)
        values: list[int] = []
        enough: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_value(value: bytes) -> None:
            values.append(int.from_bytes(value[:4], 'little'))
            if len(values) >= want and not enough.done():
                enough.set_result(None)

        start = time.monotonic()
        await self.guard(counter.subscribe(on_value))
        emit('subscribed')
        await self.guard(enough)
        seconds = time.monotonic() - start
        await self.guard(counter.unsubscribe(on_value))
        gaps = sum(1 for a, b in zip(values, values[1:]) if b > a + 1)
        duplicates = sum(1 for a, b in zip(values, values[1:]) if b <= a)
        emit(
            'notifications',
            count=len(values),
            first=values[0],
            last=values[-1],
            gaps=gaps,
            duplicates=duplicates,
            per_second=round(len(values) / seconds, 1),
        )

    async def vendor_probe(self) -> None:
        command = VendorCommand(VENDOR_PROBE_PARAMETERS, op_code=VENDOR_PROBE_OPCODE)
        start = time.monotonic()
        try:
            # Host.send_command returns whichever event answers (Complete or Status)
            # without checking its status.
            response = await self.guard(
                self.device.host.send_command(
                    command, response_timeout=VENDOR_PROBE_TIMEOUT
                )
            )
        except TimeoutError:
            emit(
                'vendor_reply',
                kind='timeout',
                status=None,
                ms=round((time.monotonic() - start) * 1000, 3),
            )
            return
        ms = round((time.monotonic() - start) * 1000, 3)
        if isinstance(response, hci.HCI_Command_Status_Event):
            emit('vendor_reply', kind='command_status', status=response.status, ms=ms)
        else:
            # Command Complete parameters: credits (1), opcode (2), then the return
            # parameters, whose first byte is the status.
            parameters = response.parameters
            status = parameters[3] if len(parameters) > 3 else None
            emit('vendor_reply', kind='command_complete', status=status, ms=ms)

    async def scan(self, target: str) -> hci.Address:
        found: asyncio.Future[hci.Address] = asyncio.get_running_loop().create_future()

        def on_advertisement(advertisement: Advertisement) -> None:
            name = advertisement.data.get(AdvertisingData.Type.COMPLETE_LOCAL_NAME)
            if name == target and not found.done():
                found.set_result(advertisement.address)

        self.device.on(self.device.EVENT_ADVERTISEMENT, on_advertisement)
        await self.guard(self.device.start_scanning(filter_duplicates=True))
        address = await self.guard(found)
        self.device.remove_listener(self.device.EVENT_ADVERTISEMENT, on_advertisement)
        await self.guard(self.device.stop_scanning())
        return address

    async def discover(self, connection: Connection) -> CharacteristicProxy[bytes]:
        return await self.characteristic(connection, SECRET_CHARACTERISTIC_UUID)

    async def characteristic(
        self, connection: Connection, uuid: UUID
    ) -> CharacteristicProxy[bytes]:
        """The testbed service's characteristic `uuid` on the peer."""
        peer = Peer(connection)
        services = await self.guard(peer.discover_services([SERVICE_UUID]))
        if not services:
            raise Failure(f'service {SERVICE_UUID} not found')
        found = await self.guard(peer.discover_characteristics([uuid], services[0]))
        if not found:
            raise Failure(f'characteristic {uuid} not found')
        return found[0]

    async def hold(self, characteristic: CharacteristicProxy[bytes]) -> None:
        """Serve stdin commands: "read" reads again, "quit" (or end of input) exits."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        while line := await self.guard(reader.readline()):
            match line.decode(errors='replace').strip():
                case 'read':
                    try:
                        value = await self.guard(characteristic.read_value())
                    except Failure:
                        raise
                    except Exception as error:
                        emit('read_failed', error=describe(error))
                    else:
                        emit('value', value=value.decode('utf-8', errors='replace'))
                case 'quit':
                    return
                case '':
                    continue
                case other:
                    emit('unknown_command', command=other)

    async def disconnect(self) -> None:
        """Leave the controller without a stale link, if the link is still up."""
        self.closing = True
        if (
            self.connection is None
            or self.connection_dropped.done()
            or self.transport_lost.done()
        ):
            return
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT):
                await self.guard(self.connection.disconnect())
        except (Failure, TimeoutError, hci.HCI_Error):
            pass  # Exiting anyway.

    def on_disconnection(self, reason: int) -> None:
        emit('disconnected', reason=reason)
        if not self.closing and not self.connection_dropped.done():
            self.connection_dropped.set_result(reason)


def describe(error: BaseException) -> str:
    if isinstance(error, ATT_Error):
        return error.error_name
    if isinstance(error, BaseError):
        text = str(error)  # already "HCI_Error(hci/NAME [0xNN])" and the like
    else:
        text = f'{type(error).__name__}: {error}'
    return ' '.join(text.split())  # one line, even for multi-line gRPC errors


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    # --timeout counts from process start, like the "t" of the events.
    deadline = asyncio.timeout_at(loop.time() + args.timeout - elapsed())
    try:
        async with deadline, await open_transport(args.transport) as transport:
            central = Central(transport, args)
            try:
                characteristic = await central.until_done()
                deadline.reschedule(None)
                if args.hold:
                    await central.hold(characteristic)
            finally:
                await central.disconnect()
        return 0
    except Failure as failure:
        emit('error', message=str(failure))
    except TimeoutError as error:
        expired = deadline.expired()
        emit(
            'error',
            message=f'timeout after {args.timeout} s' if expired else describe(error),
        )
    except Exception as error:
        emit('error', message=describe(error))
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--transport', required=True, help='bumble transport spec')
    parser.add_argument('--target', required=True, help='complete local name to find')
    parser.add_argument(
        '--hold',
        action='store_true',
        help='after the first encrypted read, serve "read"/"quit" lines from stdin',
    )
    parser.add_argument(
        '--write',
        metavar='TEXT',
        help='after the encrypted read, write TEXT to the note characteristic and '
        'read it back (prints "written")',
    )
    parser.add_argument(
        '--notifications',
        type=int,
        default=0,
        metavar='N',
        help='after the encrypted read, subscribe to the counter and check N '
        'notifications for gaps and duplicates',
    )
    parser.add_argument(
        '--vendor-probe',
        action='store_true',
        help='after power-on, send vendor command 0xFC01 and report the reply',
    )
    parser.add_argument(
        '--timeout',
        type=float,
        default=30.0,
        help='seconds from process start allowed until "done" (default 30)',
    )
    parser.add_argument(
        '--pairing',
        choices=PAIRING_METHODS,
        default='passkey',
        help='LE SC method: passkey (default; the central types the passkey) or '
        'numeric (Numeric Comparison, confirmed automatically; the peripheral '
        'must use the same)',
    )
    args = parser.parse_args()

    bumble.logging.setup_basic_logging('WARNING')
    try:
        sys.exit(asyncio.run(run(args)))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == '__main__':
    main()
