//! ITCH 5.0 messages: a pure, zero-copy decoder (`decode(&[u8]) -> Result<Message, _>`).
//!
//! `decode` takes one message without its 2-byte length prefix: the type byte, then the
//! common header (stock locate, tracking number, a 6-byte timestamp in ns since
//! midnight) and the body, all big-endian. Every type has one fixed length ([`length_of`]);
//! a message of another length is refused, so that no field is ever read past its
//! message. Stocks are borrowed from the input (`&[u8; 8]`, right-padded with spaces);
//! prices stay the integers of the feed (Price(4): 1/10,000 of a dollar; the MWCB levels
//! are Price(8)).

/// The common header of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub locate: u16,
    pub tracking: u16,
    /// Nanoseconds since midnight.
    pub ts_ns: u64,
}

/// One decoded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: Header,
    pub body: Body<'a>,
}

/// A stock as the feed carries it: 8 bytes, right-padded with spaces.
pub type Stock<'a> = &'a [u8; 8];

/// The body of each message type, named after the specification's sections; the type
/// byte is in the comment of each variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// `S`: O, S, Q, M, E, C (start of messages … end of messages).
    SystemEvent { event: u8 },
    /// `R`.
    StockDirectory(Directory<'a>),
    /// `H`: state H (halted), P (paused), Q (quotation only), T (trading).
    TradingAction {
        stock: Stock<'a>,
        state: u8,
        reserved: u8,
        reason: [u8; 4],
    },
    /// `Y`: action 0, 1 or 2.
    RegSho { stock: Stock<'a>, action: u8 },
    /// `L`.
    ParticipantPosition {
        mpid: [u8; 4],
        stock: Stock<'a>,
        primary: u8,
        mode: u8,
        state: u8,
    },
    /// `V`: Price(8).
    MwcbDecline {
        level1: u64,
        level2: u64,
        level3: u64,
    },
    /// `W`: level 1, 2 or 3 breached.
    MwcbStatus { level: u8 },
    /// `K`.
    IpoQuoting {
        stock: Stock<'a>,
        release_time: u32,
        qualifier: u8,
        price: u32,
    },
    /// `J`.
    LuldCollar {
        stock: Stock<'a>,
        reference: u32,
        upper: u32,
        lower: u32,
        extension: u32,
    },
    /// `h`: market Q, B or X; action H (halted) or T (resumed).
    OperationalHalt {
        stock: Stock<'a>,
        market: u8,
        action: u8,
    },
    /// `A` (no attribution) and `F` (with the MPID).
    AddOrder {
        reference: u64,
        side: u8,
        shares: u32,
        stock: Stock<'a>,
        price: u32,
        attribution: Option<[u8; 4]>,
    },
    /// `E`.
    Executed {
        reference: u64,
        shares: u32,
        match_number: u64,
    },
    /// `C`.
    ExecutedWithPrice {
        reference: u64,
        shares: u32,
        match_number: u64,
        printable: u8,
        price: u32,
    },
    /// `X`: a partial cancel.
    Cancel { reference: u64, shares: u32 },
    /// `D`.
    Delete { reference: u64 },
    /// `U`.
    Replace {
        original: u64,
        new: u64,
        shares: u32,
        price: u32,
    },
    /// `P`: an execution of a non-displayed order.
    Trade {
        reference: u64,
        side: u8,
        shares: u32,
        stock: Stock<'a>,
        price: u32,
        match_number: u64,
    },
    /// `Q`: cross type O (opening), C (closing), H (halt/IPO), I (intraday).
    CrossTrade {
        shares: u64,
        stock: Stock<'a>,
        price: u32,
        match_number: u64,
        cross_type: u8,
    },
    /// `B`.
    BrokenTrade { match_number: u64 },
    /// `I`: net order imbalance indicator (NOII).
    Noii {
        paired: u64,
        imbalance: u64,
        direction: u8,
        stock: Stock<'a>,
        far: u32,
        near: u32,
        reference: u32,
        cross_type: u8,
        variation: u8,
    },
    /// `N`: retail price improvement indicator (RPII).
    Rpii { stock: Stock<'a>, interest: u8 },
    /// `O`: direct listing with capital raise (DLCR) price discovery.
    Dlcr {
        stock: Stock<'a>,
        eligible: u8,
        min_price: u32,
        max_price: u32,
        near_price: u32,
        near_time: u64,
        lower_collar: u32,
        upper_collar: u32,
    },
}

/// `R`: the stock directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directory<'a> {
    pub stock: Stock<'a>,
    pub market_category: u8,
    pub financial_status: u8,
    pub round_lot: u32,
    pub round_lots_only: u8,
    pub classification: u8,
    pub subtype: [u8; 2],
    pub authenticity: u8,
    pub short_sale_threshold: u8,
    pub ipo_flag: u8,
    pub luld_tier: u8,
    pub etp_flag: u8,
    pub etp_leverage: u32,
    pub inverse: u8,
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("message type {kind:?} is {expected} bytes long, got {got}")]
    BadLength {
        kind: char,
        expected: usize,
        got: usize,
    },
}

/// Every message type of ITCH 5.0, in the order of the specification.
pub const TYPES: [u8; 23] = *b"SRHYLVWKJhAFECXDUPQBINO";

/// The length of a message of type `kind`, type byte included (the value of its length
/// prefix); `None` for a type ITCH 5.0 does not define.
pub const fn length_of(kind: u8) -> Option<usize> {
    Some(match kind {
        b'S' | b'W' => 12,
        b'R' => 39,
        b'H' => 25,
        b'Y' | b'N' => 20,
        b'L' => 26,
        b'V' | b'J' | b'U' => 35,
        b'K' => 28,
        b'h' => 21,
        b'A' | b'C' => 36,
        b'F' | b'Q' => 40,
        b'E' => 31,
        b'X' => 23,
        b'D' | b'B' => 19,
        b'P' => 44,
        b'I' => 50,
        b'O' => 48,
        _ => return None,
    })
}

/// Reads `N` bytes at `at`; the caller has checked the message's length, so the zeros
/// are never seen, but a wrong offset cannot panic either.
#[inline(always)]
fn bytes<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..)
        .and_then(|s| s.first_chunk::<N>())
        .copied()
        .unwrap_or([0; N])
}

#[inline(always)]
fn stock(b: &[u8], at: usize) -> Stock<'_> {
    const BLANK: [u8; 8] = [b' '; 8];
    b.get(at..).and_then(|s| s.first_chunk()).unwrap_or(&BLANK)
}

#[inline(always)]
fn u8_at(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

#[inline(always)]
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(bytes(b, at))
}

#[inline(always)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes(b, at))
}

#[inline(always)]
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes(b, at))
}

#[inline(always)]
fn u48_at(b: &[u8], at: usize) -> u64 {
    let [a, b2, c, d, e, f] = bytes::<6>(b, at);
    u64::from_be_bytes([0, 0, a, b2, c, d, e, f])
}

/// Decodes one message (type byte first, no length prefix).
#[inline]
pub fn decode(m: &[u8]) -> Result<Message<'_>, DecodeError> {
    let &kind = m.first().ok_or(DecodeError::Empty)?;
    let expected = length_of(kind).ok_or(DecodeError::UnknownType(kind))?;
    if m.len() != expected {
        return Err(DecodeError::BadLength {
            kind: char::from(kind),
            expected,
            got: m.len(),
        });
    }
    let header = Header {
        locate: u16_at(m, 1),
        tracking: u16_at(m, 3),
        ts_ns: u48_at(m, 5),
    };
    Ok(Message {
        header,
        body: body(kind, m),
    })
}

/// The body of a message whose type and length are checked; offsets are the
/// specification's, counted from the type byte.
#[inline(always)]
fn body(kind: u8, m: &[u8]) -> Body<'_> {
    match kind {
        b'A' | b'F' => Body::AddOrder {
            reference: u64_at(m, 11),
            side: u8_at(m, 19),
            shares: u32_at(m, 20),
            stock: stock(m, 24),
            price: u32_at(m, 32),
            attribution: (kind == b'F').then(|| bytes(m, 36)),
        },
        b'E' => Body::Executed {
            reference: u64_at(m, 11),
            shares: u32_at(m, 19),
            match_number: u64_at(m, 23),
        },
        b'C' => Body::ExecutedWithPrice {
            reference: u64_at(m, 11),
            shares: u32_at(m, 19),
            match_number: u64_at(m, 23),
            printable: u8_at(m, 31),
            price: u32_at(m, 32),
        },
        b'X' => Body::Cancel {
            reference: u64_at(m, 11),
            shares: u32_at(m, 19),
        },
        b'D' => Body::Delete {
            reference: u64_at(m, 11),
        },
        b'U' => Body::Replace {
            original: u64_at(m, 11),
            new: u64_at(m, 19),
            shares: u32_at(m, 27),
            price: u32_at(m, 31),
        },
        b'P' => Body::Trade {
            reference: u64_at(m, 11),
            side: u8_at(m, 19),
            shares: u32_at(m, 20),
            stock: stock(m, 24),
            price: u32_at(m, 32),
            match_number: u64_at(m, 36),
        },
        b'Q' => Body::CrossTrade {
            shares: u64_at(m, 11),
            stock: stock(m, 19),
            price: u32_at(m, 27),
            match_number: u64_at(m, 31),
            cross_type: u8_at(m, 39),
        },
        _ => reference_body(kind, m),
    }
}

/// The bodies that carry no order: system, directory, status and auction messages.
#[cold]
fn reference_body(kind: u8, m: &[u8]) -> Body<'_> {
    match kind {
        b'S' => Body::SystemEvent {
            event: u8_at(m, 11),
        },
        b'R' => Body::StockDirectory(Directory {
            stock: stock(m, 11),
            market_category: u8_at(m, 19),
            financial_status: u8_at(m, 20),
            round_lot: u32_at(m, 21),
            round_lots_only: u8_at(m, 25),
            classification: u8_at(m, 26),
            subtype: bytes(m, 27),
            authenticity: u8_at(m, 29),
            short_sale_threshold: u8_at(m, 30),
            ipo_flag: u8_at(m, 31),
            luld_tier: u8_at(m, 32),
            etp_flag: u8_at(m, 33),
            etp_leverage: u32_at(m, 34),
            inverse: u8_at(m, 38),
        }),
        b'H' => Body::TradingAction {
            stock: stock(m, 11),
            state: u8_at(m, 19),
            reserved: u8_at(m, 20),
            reason: bytes(m, 21),
        },
        b'Y' => Body::RegSho {
            stock: stock(m, 11),
            action: u8_at(m, 19),
        },
        b'L' => Body::ParticipantPosition {
            mpid: bytes(m, 11),
            stock: stock(m, 15),
            primary: u8_at(m, 23),
            mode: u8_at(m, 24),
            state: u8_at(m, 25),
        },
        b'V' => Body::MwcbDecline {
            level1: u64_at(m, 11),
            level2: u64_at(m, 19),
            level3: u64_at(m, 27),
        },
        b'W' => Body::MwcbStatus {
            level: u8_at(m, 11),
        },
        b'K' => Body::IpoQuoting {
            stock: stock(m, 11),
            release_time: u32_at(m, 19),
            qualifier: u8_at(m, 23),
            price: u32_at(m, 24),
        },
        b'J' => Body::LuldCollar {
            stock: stock(m, 11),
            reference: u32_at(m, 19),
            upper: u32_at(m, 23),
            lower: u32_at(m, 27),
            extension: u32_at(m, 31),
        },
        b'h' => Body::OperationalHalt {
            stock: stock(m, 11),
            market: u8_at(m, 19),
            action: u8_at(m, 20),
        },
        b'B' => Body::BrokenTrade {
            match_number: u64_at(m, 11),
        },
        b'I' => Body::Noii {
            paired: u64_at(m, 11),
            imbalance: u64_at(m, 19),
            direction: u8_at(m, 27),
            stock: stock(m, 28),
            far: u32_at(m, 36),
            near: u32_at(m, 40),
            reference: u32_at(m, 44),
            cross_type: u8_at(m, 48),
            variation: u8_at(m, 49),
        },
        b'N' => Body::Rpii {
            stock: stock(m, 11),
            interest: u8_at(m, 19),
        },
        _ => Body::Dlcr {
            stock: stock(m, 11),
            eligible: u8_at(m, 19),
            min_price: u32_at(m, 20),
            max_price: u32_at(m, 24),
            near_price: u32_at(m, 28),
            near_time: u64_at(m, 32),
            lower_collar: u32_at(m, 40),
            upper_collar: u32_at(m, 44),
        },
    }
}

/// A stock name without its padding (`b"AAPL    "` → `"AAPL"`); `None` if it is not
/// ASCII.
pub fn trimmed(stock: &[u8; 8]) -> Option<&str> {
    let end = stock.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
    std::str::from_utf8(stock.get(..end)?)
        .ok()
        .filter(|s| s.is_ascii())
}

impl Body<'_> {
    /// The type byte of this body.
    pub fn kind(&self) -> u8 {
        match self {
            Body::SystemEvent { .. } => b'S',
            Body::StockDirectory(_) => b'R',
            Body::TradingAction { .. } => b'H',
            Body::RegSho { .. } => b'Y',
            Body::ParticipantPosition { .. } => b'L',
            Body::MwcbDecline { .. } => b'V',
            Body::MwcbStatus { .. } => b'W',
            Body::IpoQuoting { .. } => b'K',
            Body::LuldCollar { .. } => b'J',
            Body::OperationalHalt { .. } => b'h',
            Body::AddOrder {
                attribution: None, ..
            } => b'A',
            Body::AddOrder { .. } => b'F',
            Body::Executed { .. } => b'E',
            Body::ExecutedWithPrice { .. } => b'C',
            Body::Cancel { .. } => b'X',
            Body::Delete { .. } => b'D',
            Body::Replace { .. } => b'U',
            Body::Trade { .. } => b'P',
            Body::CrossTrade { .. } => b'Q',
            Body::BrokenTrade { .. } => b'B',
            Body::Noii { .. } => b'I',
            Body::Rpii { .. } => b'N',
            Body::Dlcr { .. } => b'O',
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_order_decodes_from_its_bytes() {
        // Type, locate 7, tracking 2, 09:30:00.000000001, ref 42, buy 100 AAPL at 228.5.
        let ts = 34_200_000_000_001u64.to_be_bytes();
        let mut m = vec![b'A', 0, 7, 0, 2];
        m.extend_from_slice(&ts[2..]);
        m.extend_from_slice(&42u64.to_be_bytes());
        m.push(b'B');
        m.extend_from_slice(&100u32.to_be_bytes());
        m.extend_from_slice(b"AAPL    ");
        m.extend_from_slice(&2_285_000u32.to_be_bytes());
        let got = decode(&m).unwrap();
        assert_eq!(got.header.locate, 7);
        assert_eq!(got.header.ts_ns, 34_200_000_000_001);
        let Body::AddOrder {
            reference,
            side,
            shares,
            stock,
            price,
            attribution,
        } = got.body
        else {
            panic!("{got:?}");
        };
        assert_eq!((reference, side, shares, price), (42, b'B', 100, 2_285_000));
        assert_eq!((trimmed(stock), attribution), (Some("AAPL"), None));
        let mut again = Vec::new();
        super::super::encode::encode(&got, &mut again);
        assert_eq!(again[2..], m[..]);
        assert_eq!(u16::from_be_bytes([again[0], again[1]]), 36);
    }

    #[test]
    fn wrong_lengths_and_unknown_types_are_refused() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[b'z'; 12]), Err(DecodeError::UnknownType(b'z')));
        let short = decode(&[b'S'; 11]);
        assert_eq!(
            short,
            Err(DecodeError::BadLength {
                kind: 'S',
                expected: 12,
                got: 11
            })
        );
        for t in TYPES {
            let len = length_of(t).unwrap();
            let mut m = vec![0u8; len];
            m[0] = t;
            assert_eq!(decode(&m).unwrap().body.kind(), t);
            assert!(decode(&m[..len - 1]).is_err());
        }
    }
}
