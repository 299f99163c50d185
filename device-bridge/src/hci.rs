//! Sans-IO HCI reliability: sequence numbers, cumulative acks and
//! exactly-once replay across resumes.
//!
//! Each direction of the hci stream numbers its packets 1, 2, 3, ... for the
//! whole session ([`HciSender`]); the receiver delivers packet `n` only after
//! `n - 1` and drops anything it already delivered ([`HciReceiver`]), and
//! acknowledges cumulatively (`HciAck.acked` = highest delivered seq) so the
//! sender can free its retransmission buffer. When a connection dies, the
//! resuming side learns how far the peer got (`Hello.hci_rx_acked` /
//! `Welcome.hci_rx_acked`) and the sender replays exactly what follows
//! ([`HciSender::resume_from`]).

use std::collections::VecDeque;

use bt_raw::H4Packet;
use sensor_proto::bridge::HciPacket;

/// A peer broke the sequencing rules.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum SeqViolation {
    /// An ack (or resume position) above the highest seq ever sent.
    AckBeyondSent {
        /// What the peer acknowledged.
        acked: u64,
        /// The highest seq sent so far.
        sent: u64,
    },
    /// A packet skipped ahead: `seq` arrived while `expected` was next.
    Gap {
        /// The packet's seq.
        seq: u64,
        /// The seq that should have come next.
        expected: u64,
    },
}

impl std::fmt::Display for SeqViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AckBeyondSent { acked, sent } => {
                write!(f, "hci ack {acked} is beyond the last sent seq {sent}")
            }
            Self::Gap { seq, expected } => {
                write!(
                    f,
                    "hci packet seq {seq} arrived while {expected} was expected"
                )
            }
        }
    }
}

/// The sending half: numbers outgoing packets and keeps them until acked.
#[derive(Debug, Default)]
pub struct HciSender {
    last_seq: u64,
    peer_acked: u64,
    unacked: VecDeque<(u64, H4Packet)>,
    unacked_bytes: usize,
}

impl HciSender {
    /// A sender whose first packet gets seq 1.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Numbers `packet` and keeps it for retransmission; returns the wire
    /// message to send (sharing the packet's bytes, no copy).
    pub fn push(&mut self, packet: H4Packet) -> HciPacket {
        self.last_seq += 1;
        self.unacked_bytes += packet.len();
        let msg = HciPacket {
            seq: self.last_seq,
            h4: packet.clone().into_bytes(),
        };
        self.unacked.push_back((self.last_seq, packet));
        msg
    }

    /// Handles a cumulative ack; returns how many packets were freed.
    ///
    /// # Errors
    ///
    /// [`SeqViolation::AckBeyondSent`] if the peer acks something never sent.
    pub fn on_ack(&mut self, acked: u64) -> Result<usize, SeqViolation> {
        if acked > self.last_seq {
            return Err(SeqViolation::AckBeyondSent {
                acked,
                sent: self.last_seq,
            });
        }
        if acked <= self.peer_acked {
            return Ok(0);
        }
        self.peer_acked = acked;
        let mut freed = 0;
        while let Some((seq, packet)) = self.unacked.front() {
            if *seq > acked {
                break;
            }
            self.unacked_bytes -= packet.len();
            self.unacked.pop_front();
            freed += 1;
        }
        Ok(freed)
    }

    /// After a reconnect: the peer has received everything up to
    /// `peer_received`; returns, in order, the packets to send again (all
    /// later unacked packets). Send them before any new packet.
    ///
    /// # Errors
    ///
    /// [`SeqViolation::AckBeyondSent`] if `peer_received` was never sent.
    pub fn resume_from(&mut self, peer_received: u64) -> Result<Vec<HciPacket>, SeqViolation> {
        self.on_ack(peer_received)?;
        Ok(self.unacked_messages())
    }

    /// Every unacked packet, in order, as wire messages.
    #[must_use]
    pub fn unacked_messages(&self) -> Vec<HciPacket> {
        self.unacked
            .iter()
            .map(|(seq, packet)| HciPacket {
                seq: *seq,
                h4: packet.clone().into_bytes(),
            })
            .collect()
    }

    /// Packets sent and not yet acknowledged.
    #[must_use]
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Bytes of H4 data sent and not yet acknowledged.
    #[must_use]
    pub fn unacked_bytes(&self) -> usize {
        self.unacked_bytes
    }

    /// The highest seq assigned so far (0 before the first packet).
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The highest seq the peer acknowledged.
    #[must_use]
    pub fn peer_acked(&self) -> u64 {
        self.peer_acked
    }
}

/// What to do with a received packet.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Incoming {
    /// The next packet in order: deliver it, then call
    /// [`HciReceiver::delivered`].
    Deliver,
    /// Already delivered (a replay after a resume): drop it.
    Duplicate,
}

/// The receiving half: in-order, exactly-once delivery and ack batching.
#[derive(Debug, Default)]
pub struct HciReceiver {
    delivered: u64,
    ack_sent: u64,
}

impl HciReceiver {
    /// A receiver expecting seq 1.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Classifies a received packet.
    ///
    /// # Errors
    ///
    /// [`SeqViolation::Gap`] if it skips ahead (the stream is reliable and
    /// ordered, so this is a broken peer).
    pub fn check(&self, seq: u64) -> Result<Incoming, SeqViolation> {
        let expected = self.delivered + 1;
        if seq == expected {
            Ok(Incoming::Deliver)
        } else if seq < expected {
            Ok(Incoming::Duplicate)
        } else {
            Err(SeqViolation::Gap { seq, expected })
        }
    }

    /// Records that the packet [`Self::check`] approved was delivered.
    pub fn delivered(&mut self, seq: u64) {
        if seq == self.delivered + 1 {
            self.delivered = seq;
        }
    }

    /// The highest seq delivered (what to put in `hci_rx_acked`).
    #[must_use]
    pub fn last_delivered(&self) -> u64 {
        self.delivered
    }

    /// If an ack is owed, returns its value and marks it as sent.
    pub fn take_ack(&mut self) -> Option<u64> {
        (self.delivered > self.ack_sent).then(|| {
            self.ack_sent = self.delivered;
            self.delivered
        })
    }

    /// True if delivered packets have not been acknowledged yet.
    #[must_use]
    pub fn ack_due(&self) -> bool {
        self.delivered > self.ack_sent
    }

    /// After a reconnect the peer learns our position from the handshake;
    /// nothing is owed on the new connection until more arrives.
    pub fn reset_ack(&mut self) {
        self.ack_sent = self.delivered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_and_the_hci_layer_agree_on_the_largest_acl_payload() {
        // What the bridge accepts from a handset or netsim must parse here.
        assert_eq!(
            sensor_proto::MAX_ACL_PAYLOAD,
            bt_raw::h4::Limits::default().max_acl
        );
    }

    fn pkt(i: u8) -> H4Packet {
        H4Packet::parse(vec![0x04, 0x0e, 0x01, i]).expect("event")
    }

    #[test]
    fn sender_numbers_from_one_and_frees_on_cumulative_ack() {
        let mut tx = HciSender::new();
        let seqs: Vec<u64> = (0..5).map(|i| tx.push(pkt(i)).seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(tx.on_ack(3), Ok(3));
        assert_eq!(tx.unacked_len(), 2);
        assert_eq!(tx.on_ack(2), Ok(0), "acks never go backwards");
        assert_eq!(tx.unacked_bytes(), 8);
        assert!(tx.on_ack(9).is_err());
    }

    #[test]
    fn resume_replays_exactly_what_the_peer_lacks() {
        let mut tx = HciSender::new();
        for i in 0..10 {
            tx.push(pkt(i));
        }
        tx.on_ack(2).expect("ack");
        let replay = tx.resume_from(6).expect("resume");
        let seqs: Vec<u64> = replay.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [7, 8, 9, 10]);
        assert_eq!(replay[0].h4.as_ref(), pkt(6).as_bytes());
    }

    #[test]
    fn receiver_delivers_in_order_once_and_batches_acks() {
        let mut rx = HciReceiver::new();
        assert_eq!(rx.check(1), Ok(Incoming::Deliver));
        rx.delivered(1);
        rx.delivered(2);
        assert_eq!(rx.check(2), Ok(Incoming::Duplicate));
        assert_eq!(rx.check(1), Ok(Incoming::Duplicate));
        assert!(rx.check(4).is_err());
        assert_eq!(rx.take_ack(), Some(2));
        assert_eq!(rx.take_ack(), None);
        assert!(!rx.ack_due());
    }

    #[test]
    fn sender_and_receiver_survive_a_simulated_cut() {
        // Deliver 1..=5 of 10, lose the rest and all acks, resume.
        let mut tx = HciSender::new();
        let mut rx = HciReceiver::new();
        let sent: Vec<HciPacket> = (0..10).map(|i| tx.push(pkt(i))).collect();
        let mut got = Vec::new();
        for p in &sent[..5] {
            if rx.check(p.seq) == Ok(Incoming::Deliver) {
                got.push(p.seq);
                rx.delivered(p.seq);
            }
        }
        // The peer replays from its last ack (none): duplicates are dropped.
        for p in sent
            .iter()
            .take(3)
            .chain(tx.resume_from(rx.last_delivered()).expect("resume").iter())
        {
            if rx.check(p.seq) == Ok(Incoming::Deliver) {
                got.push(p.seq);
                rx.delivered(p.seq);
            }
        }
        assert_eq!(got, (1..=10).collect::<Vec<u64>>());
    }
}
