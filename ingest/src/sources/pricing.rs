//! Option pricing: Black-Scholes-Merton with a continuous dividend yield, its greeks, and a
//! volatility smile.
//!
//! Units, as published in ticks: `theta` is the value lost per calendar day, `vega` the
//! value gained per volatility point (1 %), `delta` and `gamma` per unit of the
//! underlying's price; `iv` is a fraction (0.25 = 25 %).

use tickmesh_core::tick::Right;

/// Price and greeks of one option.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Greeks {
    pub price: f64,
    pub delta: f64,
    pub gamma: f64,
    /// Per calendar day.
    pub theta: f64,
    /// Per volatility point.
    pub vega: f64,
}

/// Inputs of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    pub right: Right,
    /// Underlying price.
    pub spot: f64,
    pub strike: f64,
    /// Years to expiry.
    pub t: f64,
    /// Risk-free rate, continuous.
    pub rate: f64,
    /// Dividend yield, continuous.
    pub dividend: f64,
    /// Volatility, annualised.
    pub vol: f64,
}

/// Standard normal cumulative distribution.
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Standard normal density.
pub fn norm_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Black-Scholes-Merton price and greeks. At or past expiry (or with no volatility) the
/// option is worth its intrinsic value and only delta is left.
pub fn black_scholes(i: Inputs) -> Greeks {
    let call = i.right == Right::Call;
    let df_r = (-i.rate * i.t.max(0.0)).exp();
    let df_q = (-i.dividend * i.t.max(0.0)).exp();
    if i.t <= 0.0 || i.vol <= 0.0 {
        let forward_intrinsic = if call {
            i.spot * df_q - i.strike * df_r
        } else {
            i.strike * df_r - i.spot * df_q
        };
        let itm = forward_intrinsic > 0.0;
        let delta = match (call, itm) {
            (true, true) => df_q,
            (false, true) => -df_q,
            _ => 0.0,
        };
        return Greeks {
            price: forward_intrinsic.max(0.0),
            delta,
            gamma: 0.0,
            theta: 0.0,
            vega: 0.0,
        };
    }
    let sqrt_t = i.t.sqrt();
    let d1 = ((i.spot / i.strike).ln() + (i.rate - i.dividend + 0.5 * i.vol * i.vol) * i.t)
        / (i.vol * sqrt_t);
    let d2 = d1 - i.vol * sqrt_t;
    let pdf = norm_pdf(d1);
    let gamma = df_q * pdf / (i.spot * i.vol * sqrt_t);
    let vega = i.spot * df_q * pdf * sqrt_t / 100.0;
    let decay = -i.spot * df_q * pdf * i.vol / (2.0 * sqrt_t);
    let (price, delta, theta_year) = if call {
        (
            i.spot * df_q * norm_cdf(d1) - i.strike * df_r * norm_cdf(d2),
            df_q * norm_cdf(d1),
            decay - i.rate * i.strike * df_r * norm_cdf(d2)
                + i.dividend * i.spot * df_q * norm_cdf(d1),
        )
    } else {
        (
            i.strike * df_r * norm_cdf(-d2) - i.spot * df_q * norm_cdf(-d1),
            -df_q * norm_cdf(-d1),
            decay + i.rate * i.strike * df_r * norm_cdf(-d2)
                - i.dividend * i.spot * df_q * norm_cdf(-d1),
        )
    };
    Greeks {
        price,
        delta,
        gamma,
        theta: theta_year / 365.0,
        vega,
    }
}

/// A volatility smile: `vol = atm · (1 − skew·m + smile·m²)` with `m = ln(K/S)/√T`, so
/// downside strikes carry more volatility (equity skew), both wings lift, and short
/// expiries steepen. Clamped to 5 %..300 %.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Smile {
    pub atm: f64,
    pub skew: f64,
    pub smile: f64,
}

impl Smile {
    pub fn vol(&self, spot: f64, strike: f64, t: f64) -> f64 {
        let m = (strike / spot).ln() / t.max(1e-4).sqrt();
        let m = m.clamp(-3.0, 3.0);
        (self.atm * (1.0 - self.skew * m + self.smile * m * m)).clamp(0.05, 3.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(right: Right, spot: f64, strike: f64, t: f64, rate: f64, vol: f64) -> Inputs {
        Inputs {
            right,
            spot,
            strike,
            t,
            rate,
            dividend: 0.0,
            vol,
        }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn normal_distribution_reference_values() {
        assert!(close(norm_cdf(0.0), 0.5, 1e-15));
        assert!(close(norm_cdf(1.96), 0.975_002_104_851_780, 1e-12));
        assert!(close(norm_cdf(-1.0), 0.158_655_253_931_457, 1e-12));
        assert!(close(norm_pdf(0.0), 0.398_942_280_401_433, 1e-12));
    }

    /// Hull, Options, Futures and Other Derivatives, Example 15.6: S 42, K 40, r 10 %,
    /// vol 20 %, six months: call 4.76, put 0.81.
    #[test]
    fn matches_the_textbook_prices() {
        let c = black_scholes(inputs(Right::Call, 42.0, 40.0, 0.5, 0.1, 0.2));
        let p = black_scholes(inputs(Right::Put, 42.0, 40.0, 0.5, 0.1, 0.2));
        assert!(close(c.price, 4.7594, 1e-4), "{c:?}");
        assert!(close(p.price, 0.8086, 1e-4), "{p:?}");
    }

    /// Hull, Examples 19.1–19.6: S 49, K 50, r 5 %, vol 20 %, 20 weeks: call delta 0.522,
    /// gamma 0.066, theta −4.31 a year, vega 12.1 per unit of vol.
    #[test]
    fn matches_the_textbook_greeks() {
        let g = black_scholes(inputs(Right::Call, 49.0, 50.0, 0.3846, 0.05, 0.2));
        assert!(close(g.price, 2.40, 0.005), "{g:?}");
        assert!(close(g.delta, 0.522, 0.0005), "{g:?}");
        assert!(close(g.gamma, 0.066, 0.0005), "{g:?}");
        assert!(close(g.theta * 365.0, -4.31, 0.005), "{g:?}");
        assert!(close(g.vega * 100.0, 12.1, 0.05), "{g:?}");
    }

    #[test]
    fn put_call_parity_holds() {
        for (spot, strike, t, rate, q, vol) in [
            (228.5, 150.0, 1.2, 0.04, 0.0, 0.30),
            (593.4, 600.0, 0.02, 0.05, 0.013, 0.12),
            (23.4, 30.0, 0.25, 0.01, 0.02, 0.8),
        ] {
            let mk = |right| Inputs {
                right,
                spot,
                strike,
                t,
                rate,
                dividend: q,
                vol,
            };
            let c = black_scholes(mk(Right::Call));
            let p = black_scholes(mk(Right::Put));
            let forward = spot * (-q * t).exp() - strike * (-rate * t).exp();
            assert!(close(c.price - p.price, forward, 1e-9), "{c:?} {p:?}");
            assert!(close(c.delta - p.delta, (-q * t).exp(), 1e-12));
            assert!(close(c.gamma, p.gamma, 1e-12) && close(c.vega, p.vega, 1e-12));
        }
    }

    #[test]
    fn greeks_match_finite_differences() {
        let base = inputs(Right::Put, 100.0, 105.0, 0.4, 0.03, 0.25);
        let g = black_scholes(base);
        let h = 1e-3;
        let at = |f: &dyn Fn(&mut Inputs)| {
            let mut i = base;
            f(&mut i);
            black_scholes(i).price
        };
        let up = at(&|i| i.spot += h);
        let down = at(&|i| i.spot -= h);
        assert!(close(g.delta, (up - down) / (2.0 * h), 1e-6));
        assert!(close(g.gamma, (up - 2.0 * g.price + down) / (h * h), 1e-4));
        let vega = (at(&|i| i.vol += h) - at(&|i| i.vol -= h)) / (2.0 * h) / 100.0;
        assert!(close(g.vega, vega, 1e-6));
        let day = 1.0 / 365.0;
        let theta = at(&|i| i.t -= day) - g.price;
        assert!(close(g.theta, theta, 1e-4), "{} vs {theta}", g.theta);
    }

    #[test]
    fn expired_options_are_worth_their_intrinsic_value() {
        let c = black_scholes(inputs(Right::Call, 110.0, 100.0, 0.0, 0.05, 0.3));
        assert_eq!((c.price, c.delta, c.gamma), (10.0, 1.0, 0.0));
        let p = black_scholes(inputs(Right::Put, 110.0, 100.0, 0.0, 0.05, 0.3));
        assert_eq!((p.price, p.delta), (0.0, 0.0));
    }

    #[test]
    fn smile_has_a_downside_skew_and_lifted_wings() {
        let s = Smile {
            atm: 0.3,
            skew: 0.15,
            smile: 0.3,
        };
        let t = 0.1;
        let atm = s.vol(100.0, 100.0, t);
        assert!(close(atm, 0.3, 1e-12));
        assert!(s.vol(100.0, 90.0, t) > s.vol(100.0, 110.0, t));
        assert!(s.vol(100.0, 150.0, t) > atm && s.vol(100.0, 60.0, t) > atm);
        assert!(s.vol(100.0, 1e-9, t) <= 3.0);
    }
}
