//! Zero-copy typed views of HCI packets (Core v5.4, Vol 4, Part E, §5.4).
//!
//! A view borrows an [`H4Packet`] that framing already validated and only
//! interprets its bytes; every accessor bounds-checks, so a hostile packet
//! yields `None` instead of a panic.

use std::fmt;

use crate::{Error, H4Packet, PacketType};

/// An HCI command opcode: `OGF << 10 | OCF`, OGF 6 bits and OCF a full 10 bits.
#[derive(Clone, Copy, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct Opcode(pub u16);

impl Opcode {
    /// Builds an opcode from its group (6 bits) and command (10 bits) fields.
    pub const fn new(ogf: u8, ocf: u16) -> Self {
        Self(((ogf as u16 & 0x3F) << 10) | (ocf & 0x3FF))
    }

    /// The Opcode Group Field (6 bits).
    pub const fn ogf(self) -> u8 {
        (self.0 >> 10) as u8
    }

    /// The Opcode Command Field: the whole 10 bits, never a masked part.
    pub const fn ocf(self) -> u16 {
        self.0 & 0x3FF
    }

    /// True for vendor-specific commands (OGF 0x3F).
    pub const fn is_vendor(self) -> bool {
        self.ogf() == 0x3F
    }

    /// The command's name when bt-raw knows it.
    pub fn name(self) -> Option<&'static str> {
        opcodes::NAMES
            .iter()
            .find(|(op, _)| *op == self)
            .map(|(_, n)| *n)
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)?;
        match self.name() {
            Some(n) => write!(f, " ({n})"),
            None => write!(f, " (OGF 0x{:02x}, OCF 0x{:03x})", self.ogf(), self.ocf()),
        }
    }
}

impl fmt::Debug for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A connection handle (12 bits).
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ConnectionHandle(pub u16);

impl fmt::Display for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:03x}", self.0)
    }
}

/// Which way a packet travelled.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Direction {
    /// Host → controller ("sent").
    HostToController,
    /// Controller → host ("received").
    ControllerToHost,
}

/// Opcodes bt-raw refers to by name.
pub mod opcodes {
    use super::Opcode;

    /// `Inquiry`.
    pub const INQUIRY: Opcode = Opcode(0x0401);
    /// `Create_Connection`.
    pub const CREATE_CONNECTION: Opcode = Opcode(0x0405);
    /// `Disconnect`.
    pub const DISCONNECT: Opcode = Opcode(0x0406);
    /// `Link_Key_Request_Reply` (carries a BR/EDR link key in clear).
    pub const LINK_KEY_REQUEST_REPLY: Opcode = Opcode(0x040B);
    /// `PIN_Code_Request_Reply` (carries a PIN in clear).
    pub const PIN_CODE_REQUEST_REPLY: Opcode = Opcode(0x040D);
    /// `Set_Event_Mask`.
    pub const SET_EVENT_MASK: Opcode = Opcode(0x0C01);
    /// `Reset`.
    pub const RESET: Opcode = Opcode(0x0C03);
    /// `Read_Stored_Link_Key`.
    pub const READ_STORED_LINK_KEY: Opcode = Opcode(0x0C0D);
    /// `Write_Stored_Link_Key`.
    pub const WRITE_STORED_LINK_KEY: Opcode = Opcode(0x0C11);
    /// `Delete_Stored_Link_Key`.
    pub const DELETE_STORED_LINK_KEY: Opcode = Opcode(0x0C12);
    /// `Write_Scan_Enable`.
    pub const WRITE_SCAN_ENABLE: Opcode = Opcode(0x0C1A);
    /// `Set_Controller_To_Host_Flow_Control`.
    pub const SET_CONTROLLER_TO_HOST_FLOW_CONTROL: Opcode = Opcode(0x0C31);
    /// `Host_Buffer_Size`.
    pub const HOST_BUFFER_SIZE: Opcode = Opcode(0x0C33);
    /// `Host_Number_Of_Completed_Packets`.
    pub const HOST_NUMBER_OF_COMPLETED_PACKETS: Opcode = Opcode(0x0C35);
    /// `Read_Local_Version_Information`.
    pub const READ_LOCAL_VERSION: Opcode = Opcode(0x1001);
    /// `Read_Buffer_Size`.
    pub const READ_BUFFER_SIZE: Opcode = Opcode(0x1005);
    /// `Read_BD_ADDR`.
    pub const READ_BD_ADDR: Opcode = Opcode(0x1009);
    /// `Write_Loopback_Mode`.
    pub const WRITE_LOOPBACK_MODE: Opcode = Opcode(0x1802);
    /// `Enable_Device_Under_Test_Mode`.
    pub const ENABLE_DUT_MODE: Opcode = Opcode(0x1803);
    /// `Write_Simple_Pairing_Debug_Mode`.
    pub const WRITE_SSP_DEBUG_MODE: Opcode = Opcode(0x1804);
    /// `Write_Secure_Connections_Test_Mode`.
    pub const WRITE_SC_TEST_MODE: Opcode = Opcode(0x180A);
    /// `LE_Set_Event_Mask`.
    pub const LE_SET_EVENT_MASK: Opcode = Opcode(0x2001);
    /// `LE_Read_Buffer_Size` (v1).
    pub const LE_READ_BUFFER_SIZE: Opcode = Opcode(0x2002);
    /// `LE_Set_Random_Address`.
    pub const LE_SET_RANDOM_ADDRESS: Opcode = Opcode(0x2005);
    /// `LE_Set_Advertising_Enable`.
    pub const LE_SET_ADVERTISING_ENABLE: Opcode = Opcode(0x200A);
    /// `LE_Set_Scan_Enable`.
    pub const LE_SET_SCAN_ENABLE: Opcode = Opcode(0x200C);
    /// `LE_Create_Connection`.
    pub const LE_CREATE_CONNECTION: Opcode = Opcode(0x200D);
    /// `LE_Connection_Update`.
    pub const LE_CONNECTION_UPDATE: Opcode = Opcode(0x2013);
    /// `LE_Read_Remote_Features`.
    pub const LE_READ_REMOTE_FEATURES: Opcode = Opcode(0x2016);
    /// `LE_Encrypt` (carries a key in clear).
    pub const LE_ENCRYPT: Opcode = Opcode(0x2017);
    /// `LE_Enable_Encryption` (carries the LTK in clear).
    pub const LE_ENABLE_ENCRYPTION: Opcode = Opcode(0x2019);
    /// `LE_Long_Term_Key_Request_Reply` (carries the LTK in clear).
    pub const LE_LTK_REQUEST_REPLY: Opcode = Opcode(0x201A);
    /// `LE_Receiver_Test` (v1).
    pub const LE_RECEIVER_TEST: Opcode = Opcode(0x201D);
    /// `LE_Transmitter_Test` (v1).
    pub const LE_TRANSMITTER_TEST: Opcode = Opcode(0x201E);
    /// `LE_Test_End`.
    pub const LE_TEST_END: Opcode = Opcode(0x201F);
    /// `LE_Read_Local_P-256_Public_Key`.
    pub const LE_READ_LOCAL_P256_PUBLIC_KEY: Opcode = Opcode(0x2025);
    /// `LE_Generate_DHKey` (v1).
    pub const LE_GENERATE_DHKEY: Opcode = Opcode(0x2026);
    /// `LE_Add_Device_To_Resolving_List` (carries IRKs in clear).
    pub const LE_ADD_DEVICE_TO_RESOLVING_LIST: Opcode = Opcode(0x2027);
    /// `LE_Receiver_Test` (v2).
    pub const LE_RECEIVER_TEST_V2: Opcode = Opcode(0x2033);
    /// `LE_Transmitter_Test` (v2).
    pub const LE_TRANSMITTER_TEST_V2: Opcode = Opcode(0x2034);
    /// `LE_Set_Advertising_Set_Random_Address`.
    pub const LE_SET_ADV_SET_RANDOM_ADDRESS: Opcode = Opcode(0x2035);
    /// `LE_Set_Extended_Advertising_Enable`.
    pub const LE_SET_EXT_ADVERTISING_ENABLE: Opcode = Opcode(0x2039);
    /// `LE_Set_Periodic_Advertising_Enable`.
    pub const LE_SET_PERIODIC_ADVERTISING_ENABLE: Opcode = Opcode(0x2040);
    /// `LE_Extended_Create_Connection`.
    pub const LE_EXT_CREATE_CONNECTION: Opcode = Opcode(0x2043);
    /// `LE_Receiver_Test` (v3).
    pub const LE_RECEIVER_TEST_V3: Opcode = Opcode(0x204F);
    /// `LE_Transmitter_Test` (v3).
    pub const LE_TRANSMITTER_TEST_V3: Opcode = Opcode(0x2050);
    /// `LE_Read_Buffer_Size` (v2).
    pub const LE_READ_BUFFER_SIZE_V2: Opcode = Opcode(0x2060);
    /// `LE_Transmitter_Test` (v4).
    pub const LE_TRANSMITTER_TEST_V4: Opcode = Opcode(0x207B);

    /// Names for display and logs.
    pub(crate) const NAMES: &[(Opcode, &str)] = &[
        (INQUIRY, "Inquiry"),
        (CREATE_CONNECTION, "Create_Connection"),
        (DISCONNECT, "Disconnect"),
        (LINK_KEY_REQUEST_REPLY, "Link_Key_Request_Reply"),
        (PIN_CODE_REQUEST_REPLY, "PIN_Code_Request_Reply"),
        (SET_EVENT_MASK, "Set_Event_Mask"),
        (RESET, "Reset"),
        (READ_STORED_LINK_KEY, "Read_Stored_Link_Key"),
        (WRITE_STORED_LINK_KEY, "Write_Stored_Link_Key"),
        (DELETE_STORED_LINK_KEY, "Delete_Stored_Link_Key"),
        (WRITE_SCAN_ENABLE, "Write_Scan_Enable"),
        (
            SET_CONTROLLER_TO_HOST_FLOW_CONTROL,
            "Set_Controller_To_Host_Flow_Control",
        ),
        (HOST_BUFFER_SIZE, "Host_Buffer_Size"),
        (
            HOST_NUMBER_OF_COMPLETED_PACKETS,
            "Host_Number_Of_Completed_Packets",
        ),
        (READ_LOCAL_VERSION, "Read_Local_Version_Information"),
        (READ_BUFFER_SIZE, "Read_Buffer_Size"),
        (READ_BD_ADDR, "Read_BD_ADDR"),
        (WRITE_LOOPBACK_MODE, "Write_Loopback_Mode"),
        (ENABLE_DUT_MODE, "Enable_Device_Under_Test_Mode"),
        (WRITE_SSP_DEBUG_MODE, "Write_Simple_Pairing_Debug_Mode"),
        (WRITE_SC_TEST_MODE, "Write_Secure_Connections_Test_Mode"),
        (LE_SET_EVENT_MASK, "LE_Set_Event_Mask"),
        (LE_READ_BUFFER_SIZE, "LE_Read_Buffer_Size"),
        (LE_SET_RANDOM_ADDRESS, "LE_Set_Random_Address"),
        (LE_SET_ADVERTISING_ENABLE, "LE_Set_Advertising_Enable"),
        (LE_SET_SCAN_ENABLE, "LE_Set_Scan_Enable"),
        (LE_CREATE_CONNECTION, "LE_Create_Connection"),
        (LE_CONNECTION_UPDATE, "LE_Connection_Update"),
        (LE_READ_REMOTE_FEATURES, "LE_Read_Remote_Features"),
        (LE_ENCRYPT, "LE_Encrypt"),
        (LE_ENABLE_ENCRYPTION, "LE_Enable_Encryption"),
        (LE_LTK_REQUEST_REPLY, "LE_Long_Term_Key_Request_Reply"),
        (LE_RECEIVER_TEST, "LE_Receiver_Test"),
        (LE_TRANSMITTER_TEST, "LE_Transmitter_Test"),
        (LE_TEST_END, "LE_Test_End"),
        (
            LE_READ_LOCAL_P256_PUBLIC_KEY,
            "LE_Read_Local_P-256_Public_Key",
        ),
        (LE_GENERATE_DHKEY, "LE_Generate_DHKey"),
        (
            LE_ADD_DEVICE_TO_RESOLVING_LIST,
            "LE_Add_Device_To_Resolving_List",
        ),
        (LE_RECEIVER_TEST_V2, "LE_Receiver_Test_v2"),
        (LE_TRANSMITTER_TEST_V2, "LE_Transmitter_Test_v2"),
        (
            LE_SET_ADV_SET_RANDOM_ADDRESS,
            "LE_Set_Advertising_Set_Random_Address",
        ),
        (
            LE_SET_EXT_ADVERTISING_ENABLE,
            "LE_Set_Extended_Advertising_Enable",
        ),
        (
            LE_SET_PERIODIC_ADVERTISING_ENABLE,
            "LE_Set_Periodic_Advertising_Enable",
        ),
        (LE_EXT_CREATE_CONNECTION, "LE_Extended_Create_Connection"),
        (LE_RECEIVER_TEST_V3, "LE_Receiver_Test_v3"),
        (LE_TRANSMITTER_TEST_V3, "LE_Transmitter_Test_v3"),
        (LE_READ_BUFFER_SIZE_V2, "LE_Read_Buffer_Size_v2"),
        (LE_TRANSMITTER_TEST_V4, "LE_Transmitter_Test_v4"),
    ];
}

/// Event codes bt-raw refers to by name.
pub mod events {
    /// Connection Complete (BR/EDR).
    pub const CONNECTION_COMPLETE: u8 = 0x03;
    /// Disconnection Complete.
    pub const DISCONNECTION_COMPLETE: u8 = 0x05;
    /// Encryption Change (v1).
    pub const ENCRYPTION_CHANGE: u8 = 0x08;
    /// Command Complete.
    pub const COMMAND_COMPLETE: u8 = 0x0E;
    /// Command Status.
    pub const COMMAND_STATUS: u8 = 0x0F;
    /// Hardware Error.
    pub const HARDWARE_ERROR: u8 = 0x10;
    /// Number Of Completed Packets.
    pub const NUMBER_OF_COMPLETED_PACKETS: u8 = 0x13;
    /// Return Link Keys (carries link keys in clear).
    pub const RETURN_LINK_KEYS: u8 = 0x15;
    /// Link Key Request.
    pub const LINK_KEY_REQUEST: u8 = 0x17;
    /// Link Key Notification (carries a link key in clear).
    pub const LINK_KEY_NOTIFICATION: u8 = 0x18;
    /// Data Buffer Overflow.
    pub const DATA_BUFFER_OVERFLOW: u8 = 0x1A;
    /// LE Meta event; the first parameter is the subevent.
    pub const LE_META: u8 = 0x3E;
    /// Encryption Change (v2).
    pub const ENCRYPTION_CHANGE_V2: u8 = 0x59;
    /// LE subevent: Connection Complete.
    pub const LE_CONNECTION_COMPLETE: u8 = 0x01;
    /// LE subevent: Long Term Key Request.
    pub const LE_LONG_TERM_KEY_REQUEST: u8 = 0x05;
    /// LE subevent: Enhanced Connection Complete (v1).
    pub const LE_ENHANCED_CONNECTION_COMPLETE: u8 = 0x0A;
    /// LE subevent: CIS Established.
    pub const LE_CIS_ESTABLISHED: u8 = 0x19;
    /// LE subevent: Enhanced Connection Complete (v2).
    pub const LE_ENHANCED_CONNECTION_COMPLETE_V2: u8 = 0x29;
}

/// HCI error codes used in replies bt-raw generates (Core v5.4, Vol 1, Part F).
pub mod status {
    /// Success.
    pub const SUCCESS: u8 = 0x00;
    /// Unknown HCI Command.
    pub const UNKNOWN_HCI_COMMAND: u8 = 0x01;
    /// Hardware Failure.
    pub const HARDWARE_FAILURE: u8 = 0x03;
    /// Command Disallowed.
    pub const COMMAND_DISALLOWED: u8 = 0x0C;
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn expect(pkt: &H4Packet, kind: PacketType, name: &'static str) -> Result<(), Error> {
    if pkt.kind() == kind {
        Ok(())
    } else {
        Err(Error::WrongKind {
            expected: name,
            actual: pkt.kind(),
        })
    }
}

/// A view of an HCI command packet.
#[derive(Clone, Copy, Debug)]
pub struct Command<'a>(&'a H4Packet);

impl<'a> Command<'a> {
    /// Views `pkt` as a command.
    ///
    /// # Errors
    /// [`Error::WrongKind`] when it is not a command.
    pub fn new(pkt: &'a H4Packet) -> Result<Self, Error> {
        expect(pkt, PacketType::Command, "command")?;
        Ok(Self(pkt))
    }

    /// The opcode.
    pub fn opcode(&self) -> Opcode {
        let b = self.0.body();
        Opcode(u16::from_le_bytes([b[0], b[1]]))
    }

    /// The parameters after the 3-byte header.
    pub fn params(&self) -> &'a [u8] {
        self.0.payload()
    }
}

/// Command Complete parameters (event 0x0E).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct CommandComplete<'a> {
    /// Num_HCI_Command_Packets: commands the host may now have outstanding.
    pub num_hci_command_packets: u8,
    /// The completed command (0x0000 = credit update only).
    pub opcode: Opcode,
    /// Return parameters; the first byte is usually the status.
    pub return_params: &'a [u8],
}

/// Command Status parameters (event 0x0F).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct CommandStatus {
    /// The status of the command.
    pub status: u8,
    /// Num_HCI_Command_Packets: commands the host may now have outstanding.
    pub num_hci_command_packets: u8,
    /// The command this status is for.
    pub opcode: Opcode,
}

/// A view of an HCI event packet.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a>(&'a H4Packet);

impl<'a> Event<'a> {
    /// Views `pkt` as an event.
    ///
    /// # Errors
    /// [`Error::WrongKind`] when it is not an event.
    pub fn new(pkt: &'a H4Packet) -> Result<Self, Error> {
        expect(pkt, PacketType::Event, "event")?;
        Ok(Self(pkt))
    }

    /// The event code.
    pub fn code(&self) -> u8 {
        self.0.body()[0]
    }

    /// The event parameters.
    pub fn params(&self) -> &'a [u8] {
        self.0.payload()
    }

    /// The LE subevent code, for LE Meta events.
    pub fn le_subevent(&self) -> Option<u8> {
        (self.code() == events::LE_META)
            .then(|| self.params().first().copied())
            .flatten()
    }

    /// Command Complete fields, if this is a well-formed Command Complete.
    pub fn command_complete(&self) -> Option<CommandComplete<'a>> {
        if self.code() != events::COMMAND_COMPLETE {
            return None;
        }
        let p = self.params();
        Some(CommandComplete {
            num_hci_command_packets: *p.first()?,
            opcode: Opcode(le16(p, 1)?),
            return_params: &p[3..],
        })
    }

    /// Command Status fields, if this is a well-formed Command Status.
    pub fn command_status(&self) -> Option<CommandStatus> {
        if self.code() != events::COMMAND_STATUS {
            return None;
        }
        let p = self.params();
        Some(CommandStatus {
            status: *p.first()?,
            num_hci_command_packets: *p.get(1)?,
            opcode: Opcode(le16(p, 2)?),
        })
    }

    /// `Num_HCI_Command_Packets` of a Command Complete or Command Status.
    pub fn command_credits(&self) -> Option<u8> {
        self.command_complete()
            .map(|c| c.num_hci_command_packets)
            .or_else(|| self.command_status().map(|s| s.num_hci_command_packets))
    }

    /// The (handle, count) pairs of a Number Of Completed Packets event.
    ///
    /// Returns `None` when it is another event or its length is inconsistent.
    pub fn completed_packets(&self) -> Option<Vec<(ConnectionHandle, u16)>> {
        if self.code() != events::NUMBER_OF_COMPLETED_PACKETS {
            return None;
        }
        let p = self.params();
        let n = usize::from(*p.first()?);
        if p.len() != 1 + 4 * n {
            return None;
        }
        (0..n)
            .map(|i| {
                let at = 1 + 4 * i;
                Some((ConnectionHandle(le16(p, at)? & 0x0FFF), le16(p, at + 2)?))
            })
            .collect()
    }
}

/// A view of an ACL data packet.
#[derive(Clone, Copy, Debug)]
pub struct Acl<'a>(&'a H4Packet);

impl<'a> Acl<'a> {
    /// Views `pkt` as ACL data.
    ///
    /// # Errors
    /// [`Error::WrongKind`] when it is not ACL.
    pub fn new(pkt: &'a H4Packet) -> Result<Self, Error> {
        expect(pkt, PacketType::Acl, "ACL")?;
        Ok(Self(pkt))
    }

    fn word(&self) -> u16 {
        let b = self.0.body();
        u16::from_le_bytes([b[0], b[1]])
    }

    /// The connection handle (bits 0-11).
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle(self.word() & 0x0FFF)
    }

    /// Packet_Boundary flag (bits 12-13).
    pub fn pb_flag(&self) -> u8 {
        ((self.word() >> 12) & 0b11) as u8
    }

    /// Broadcast flag (bits 14-15).
    pub fn bc_flag(&self) -> u8 {
        ((self.word() >> 14) & 0b11) as u8
    }

    /// The data after the 4-byte header.
    pub fn data(&self) -> &'a [u8] {
        self.0.payload()
    }
}

/// A view of a SCO data packet.
#[derive(Clone, Copy, Debug)]
pub struct Sco<'a>(&'a H4Packet);

impl<'a> Sco<'a> {
    /// Views `pkt` as SCO data.
    ///
    /// # Errors
    /// [`Error::WrongKind`] when it is not SCO.
    pub fn new(pkt: &'a H4Packet) -> Result<Self, Error> {
        expect(pkt, PacketType::Sco, "SCO")?;
        Ok(Self(pkt))
    }

    /// The connection handle (bits 0-11).
    pub fn handle(&self) -> ConnectionHandle {
        let b = self.0.body();
        ConnectionHandle(u16::from_le_bytes([b[0], b[1]]) & 0x0FFF)
    }

    /// Packet_Status_Flag (bits 12-13).
    pub fn packet_status(&self) -> u8 {
        (self.0.body()[1] >> 4) & 0b11
    }

    /// The data after the 3-byte header.
    pub fn data(&self) -> &'a [u8] {
        self.0.payload()
    }
}

/// A view of an ISO data packet.
#[derive(Clone, Copy, Debug)]
pub struct Iso<'a>(&'a H4Packet);

impl<'a> Iso<'a> {
    /// Views `pkt` as ISO data.
    ///
    /// # Errors
    /// [`Error::WrongKind`] when it is not ISO.
    pub fn new(pkt: &'a H4Packet) -> Result<Self, Error> {
        expect(pkt, PacketType::Iso, "ISO")?;
        Ok(Self(pkt))
    }

    fn word(&self) -> u16 {
        let b = self.0.body();
        u16::from_le_bytes([b[0], b[1]])
    }

    /// The connection handle (bits 0-11).
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle(self.word() & 0x0FFF)
    }

    /// PB flag (bits 12-13).
    pub fn pb_flag(&self) -> u8 {
        ((self.word() >> 12) & 0b11) as u8
    }

    /// TS flag (bit 14): a Time_Stamp precedes the data.
    pub fn ts_flag(&self) -> bool {
        self.word() & 0x4000 != 0
    }

    /// The data load after the 4-byte header.
    pub fn data(&self) -> &'a [u8] {
        self.0.payload()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(raw: &[u8]) -> H4Packet {
        H4Packet::parse(raw.to_vec()).unwrap()
    }

    #[test]
    fn opcode_fields_use_the_full_ocf() {
        let op = Opcode(0xFC01);
        assert_eq!(op.ogf(), 0x3F);
        assert_eq!(op.ocf(), 0x001);
        assert!(op.is_vendor());
        let op = Opcode::new(0x08, 0x3FF);
        assert_eq!(op.0, 0x23FF);
        assert_eq!(op.ocf(), 0x3FF);
        assert_eq!(Opcode(0x0C83).ocf(), 0x083);
        assert_ne!(Opcode(0x0C83), opcodes::RESET);
        assert_eq!(opcodes::RESET.to_string(), "0x0c03 (Reset)");
        assert_eq!(Opcode(0x0C83).to_string(), "0x0c83 (OGF 0x03, OCF 0x083)");
    }

    #[test]
    fn command_view() {
        let p = pkt(&[0x01, 0x01, 0x10, 0x00]);
        let c = Command::new(&p).unwrap();
        assert_eq!(c.opcode(), opcodes::READ_LOCAL_VERSION);
        assert!(c.params().is_empty());
        assert!(Event::new(&p).is_err());
    }

    #[test]
    fn command_complete_and_status() {
        let p = pkt(&[0x04, 0x0E, 0x04, 0x05, 0x03, 0x0C, 0x00]);
        let e = Event::new(&p).unwrap();
        let cc = e.command_complete().unwrap();
        assert_eq!(cc.num_hci_command_packets, 5);
        assert_eq!(cc.opcode, opcodes::RESET);
        assert_eq!(cc.return_params, &[0x00]);
        assert_eq!(e.command_credits(), Some(5));
        assert!(e.command_status().is_none());

        let p = pkt(&[0x04, 0x0F, 0x04, 0x00, 0x01, 0x0D, 0x20]);
        let s = Event::new(&p).unwrap().command_status().unwrap();
        assert_eq!(s.opcode, opcodes::LE_CREATE_CONNECTION);
        assert_eq!(s.num_hci_command_packets, 1);

        // A Command Complete too short to hold its opcode is not misread.
        let p = pkt(&[0x04, 0x0E, 0x02, 0x01, 0x03]);
        assert!(Event::new(&p).unwrap().command_complete().is_none());
    }

    #[test]
    fn le_subevent_and_completed_packets() {
        let p = pkt(&[0x04, 0x3E, 0x02, 0x05, 0x00]);
        assert_eq!(Event::new(&p).unwrap().le_subevent(), Some(0x05));
        // bumble's encoding of [1,2]/[3,4].
        let p = pkt(&[
            0x04, 0x13, 0x09, 0x02, 0x01, 0x00, 0x03, 0x00, 0x02, 0x00, 0x04, 0x00,
        ]);
        assert_eq!(
            Event::new(&p).unwrap().completed_packets().unwrap(),
            vec![(ConnectionHandle(1), 3), (ConnectionHandle(2), 4)]
        );
        // Num_Handles inconsistent with the length.
        let p = pkt(&[0x04, 0x13, 0x05, 0x02, 0x01, 0x00, 0x03, 0x00]);
        assert!(Event::new(&p).unwrap().completed_packets().is_none());
    }

    #[test]
    fn acl_sco_iso_views() {
        let p = pkt(&[0x02, 0x40, 0x20, 0x01, 0x00, 0xAA]);
        let a = Acl::new(&p).unwrap();
        assert_eq!(a.handle(), ConnectionHandle(0x040));
        assert_eq!(a.pb_flag(), 0b10);
        assert_eq!(a.bc_flag(), 0);
        assert_eq!(a.data(), &[0xAA]);

        let p = pkt(&[0x03, 0x05, 0x10, 0x01, 0x77]);
        let s = Sco::new(&p).unwrap();
        assert_eq!(s.handle(), ConnectionHandle(5));
        assert_eq!(s.packet_status(), 1);

        let p = pkt(&[0x05, 0x07, 0x60, 0x01, 0x00, 0x99]);
        let i = Iso::new(&p).unwrap();
        assert_eq!(i.handle(), ConnectionHandle(7));
        assert_eq!(i.pb_flag(), 0b10);
        assert!(i.ts_flag());
        assert_eq!(i.data(), &[0x99]);
    }
}
