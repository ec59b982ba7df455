//! The inverse of [`super::msg::decode`]: writes a message as a NASDAQ file carries it,
//! its 2-byte big-endian length first. The generator writes its days with it.

use super::msg::{Body, Directory, Message};

/// Big-endian fields appended in order.
struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn b(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn c(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.b(&v.to_be_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.b(&v.to_be_bytes())
    }
}

/// Appends `m`, length prefix included, to `out`.
pub fn encode(m: &Message<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    let h = &m.header;
    W(out)
        .b(&[0, 0, m.body.kind()])
        .b(&h.locate.to_be_bytes())
        .b(&h.tracking.to_be_bytes())
        .b(&h.ts_ns.to_be_bytes()[2..]);
    body(&m.body, &mut W(out));
    let len = u16::try_from(out.len() - start - 2).expect("ITCH messages are under 64 bytes");
    out[start..start + 2].copy_from_slice(&len.to_be_bytes());
}

fn body(b: &Body<'_>, w: &mut W<'_>) {
    match *b {
        Body::SystemEvent { event: v } | Body::MwcbStatus { level: v } => w.c(v),
        Body::StockDirectory(ref d) => directory(d, w),
        Body::TradingAction {
            stock,
            state,
            reserved,
            reason,
        } => w.b(stock).c(state).c(reserved).b(&reason),
        Body::RegSho { stock, action: v } | Body::Rpii { stock, interest: v } => w.b(stock).c(v),
        Body::ParticipantPosition {
            mpid,
            stock,
            primary,
            mode,
            state,
        } => w.b(&mpid).b(stock).c(primary).c(mode).c(state),
        Body::MwcbDecline {
            level1,
            level2,
            level3,
        } => w.u64(level1).u64(level2).u64(level3),
        Body::IpoQuoting {
            stock,
            release_time,
            qualifier,
            price,
        } => w.b(stock).u32(release_time).c(qualifier).u32(price),
        Body::LuldCollar {
            stock,
            reference,
            upper,
            lower,
            extension,
        } => w
            .b(stock)
            .u32(reference)
            .u32(upper)
            .u32(lower)
            .u32(extension),
        Body::OperationalHalt {
            stock,
            market,
            action,
        } => w.b(stock).c(market).c(action),
        _ => order_body(b, w),
    };
}

fn order_body<'w, 'a>(b: &Body<'_>, w: &'w mut W<'a>) -> &'w mut W<'a> {
    match *b {
        Body::AddOrder {
            reference,
            side,
            shares,
            stock,
            price,
            attribution,
        } => {
            w.u64(reference).c(side).u32(shares).b(stock).u32(price);
            w.b(attribution.as_ref().map_or(&[], |a| a.as_slice()))
        }
        Body::Executed {
            reference,
            shares,
            match_number,
        } => w.u64(reference).u32(shares).u64(match_number),
        Body::ExecutedWithPrice {
            reference,
            shares,
            match_number,
            printable,
            price,
        } => w
            .u64(reference)
            .u32(shares)
            .u64(match_number)
            .c(printable)
            .u32(price),
        Body::Cancel { reference, shares } => w.u64(reference).u32(shares),
        Body::Delete { reference: v } | Body::BrokenTrade { match_number: v } => w.u64(v),
        Body::Replace {
            original,
            new,
            shares,
            price,
        } => w.u64(original).u64(new).u32(shares).u32(price),
        Body::Trade {
            reference,
            side,
            shares,
            stock,
            price,
            match_number,
        } => w
            .u64(reference)
            .c(side)
            .u32(shares)
            .b(stock)
            .u32(price)
            .u64(match_number),
        Body::CrossTrade {
            shares,
            stock,
            price,
            match_number,
            cross_type,
        } => w
            .u64(shares)
            .b(stock)
            .u32(price)
            .u64(match_number)
            .c(cross_type),
        _ => auction_body(b, w),
    }
}

fn auction_body<'w, 'a>(b: &Body<'_>, w: &'w mut W<'a>) -> &'w mut W<'a> {
    match *b {
        Body::Noii {
            paired,
            imbalance,
            direction,
            stock,
            far,
            near,
            reference,
            cross_type,
            variation,
        } => {
            w.u64(paired).u64(imbalance).c(direction).b(stock);
            w.u32(far)
                .u32(near)
                .u32(reference)
                .c(cross_type)
                .c(variation)
        }
        Body::Dlcr {
            stock,
            eligible,
            min_price,
            max_price,
            near_price,
            near_time,
            lower_collar,
            upper_collar,
        } => {
            w.b(stock)
                .c(eligible)
                .u32(min_price)
                .u32(max_price)
                .u32(near_price);
            w.u64(near_time).u32(lower_collar).u32(upper_collar)
        }
        // Every other body is written by `body` or `order_body`.
        _ => w,
    }
}

fn directory<'w, 'a>(d: &Directory<'_>, w: &'w mut W<'a>) -> &'w mut W<'a> {
    w.b(d.stock).c(d.market_category).c(d.financial_status);
    w.u32(d.round_lot).c(d.round_lots_only).c(d.classification);
    w.b(&d.subtype).c(d.authenticity).c(d.short_sale_threshold);
    w.c(d.ipo_flag).c(d.luld_tier).c(d.etp_flag);
    w.u32(d.etp_leverage).c(d.inverse)
}
