"""Constants and helpers shared by the testbed's peripheral.py and central.py."""

from __future__ import annotations

import json
import os
import time

from bumble.core import UUID
from bumble.pairing import PairingConfig, PairingDelegate

# "7670686f6e65" is "vphone" in ASCII.
SERVICE_UUID = UUID('5e1e0001-7c3b-4d2a-9f00-7670686f6e65')
SECRET_CHARACTERISTIC_UUID = UUID('5e1e0002-7c3b-4d2a-9f00-7670686f6e65')
SECRET_VALUE = b'secret-value'
# Notifies a 4-byte little-endian counter, +1 per notification, every
# COUNTER_PERIOD seconds to subscribers (over an encrypted link).
COUNTER_CHARACTERISTIC_UUID = UUID('5e1e0003-7c3b-4d2a-9f00-7670686f6e65')
COUNTER_PERIOD = 0.02
# Readable and writable over an encrypted link: what was last written.
NOTE_CHARACTERISTIC_UUID = UUID('5e1e0004-7c3b-4d2a-9f00-7670686f6e65')
PASSKEY = 123456
DEFAULT_PERIPHERAL_NAME = 'EncPeripheral'
DEFAULT_PERIPHERAL_ADDRESS = 'F1:F1:F1:F1:F1:F1'
# LE Secure Connections association models the scripts can use (--pairing):
# "passkey" (the default): the peripheral displays PASSKEY, the central types it;
# "numeric": Numeric Comparison, both sides display the number and confirm it.
PAIRING_METHODS = ('passkey', 'numeric')


def _process_start() -> float:
    """Start time of this process on the CLOCK_BOOTTIME scale (Linux /proc).

    Falls back to "now" (module import time) where /proc is not available.
    """
    try:
        with open('/proc/self/stat', encoding='ascii') as stat:
            # Field 22 (starttime, clock ticks since boot); the command name in
            # field 2 may contain spaces, so split after its closing parenthesis.
            fields = stat.read().rsplit(')', 1)[1].split()
        return int(fields[19]) / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        return time.clock_gettime(time.CLOCK_BOOTTIME)


_PROCESS_START = _process_start()


def elapsed() -> float:
    """Seconds since this process started."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) - _PROCESS_START


def emit(event: str, **fields: object) -> None:
    """Print one JSON event line on stdout, with "t" = seconds since process start."""
    record = {'event': event, 't': round(elapsed(), 4), **fields}
    print(json.dumps(record), flush=True)


class FixedPasskeyDelegate(PairingDelegate):
    """Pairing delegate that displays (peripheral) or types (central) PASSKEY."""

    async def generate_passkey(self) -> int:
        return PASSKEY

    async def get_number(self) -> int | None:
        return PASSKEY

    async def compare_numbers(self, number: int, digits: int) -> bool:
        """Numeric Comparison (--pairing numeric): report the number and confirm."""
        emit('compare_numbers', number=number, digits=digits)
        return True


def io_capability(pairing: str, central: bool) -> PairingDelegate.IoCapability:
    """The IO capability that makes LE SC use `pairing` (one of PAIRING_METHODS)."""
    if pairing == 'numeric':
        return PairingDelegate.IoCapability.DISPLAY_OUTPUT_AND_YES_NO_INPUT
    if pairing != 'passkey':
        raise ValueError(f'unknown pairing method {pairing!r}')
    if central:
        return PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY
    return PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY


def pairing_config(io_capability: PairingDelegate.IoCapability) -> PairingConfig:
    """LE Secure Connections, MITM protection and bonding, with a fixed passkey."""
    return PairingConfig(
        sc=True,
        mitm=True,
        bonding=True,
        delegate=FixedPasskeyDelegate(io_capability),
    )
