//! Money as an integer count of a currency's minor unit. ISO 4217 gives the exponent
//! (JPY 0, USD 2, KWD 3); no float ever holds an amount, and arithmetic that would overflow
//! is an error, never a wrap.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A currency paywarden accepts, with its ISO 4217 minor-unit exponent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    index: u8,
}

/// ISO 4217 alphabetic code (lower case, as Stripe writes it) and exponent.
const CURRENCIES: &[(&str, u8)] = &[
    ("aed", 2),
    ("ars", 2),
    ("aud", 2),
    ("bhd", 3),
    ("brl", 2),
    ("cad", 2),
    ("chf", 2),
    ("clp", 0),
    ("cny", 2),
    ("cop", 2),
    ("czk", 2),
    ("dkk", 2),
    ("egp", 2),
    ("eur", 2),
    ("gbp", 2),
    ("hkd", 2),
    ("huf", 2),
    ("idr", 2),
    ("ils", 2),
    ("inr", 2),
    ("isk", 0),
    ("jod", 3),
    ("jpy", 0),
    ("krw", 0),
    ("kwd", 3),
    ("mxn", 2),
    ("myr", 2),
    ("ngn", 2),
    ("nok", 2),
    ("nzd", 2),
    ("omr", 3),
    ("php", 2),
    ("pkr", 2),
    ("pln", 2),
    ("qar", 2),
    ("ron", 2),
    ("sar", 2),
    ("sek", 2),
    ("sgd", 2),
    ("thb", 2),
    ("tnd", 3),
    ("try", 2),
    ("twd", 2),
    ("ugx", 0),
    ("usd", 2),
    ("vnd", 0),
    ("xaf", 0),
    ("xof", 0),
    ("zar", 2),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    #[error("Invalid currency: {0}. Use a three-letter ISO 4217 code that paywarden supports, such as usd, eur, jpy or kwd.")]
    Unsupported(String),
}

impl Currency {
    pub const USD: Currency = Currency::known("usd");
    pub const EUR: Currency = Currency::known("eur");
    pub const JPY: Currency = Currency::known("jpy");
    pub const KWD: Currency = Currency::known("kwd");

    const fn known(code: &str) -> Currency {
        let mut i = 0;
        while i < CURRENCIES.len() {
            let (c, _) = CURRENCIES[i];
            let (a, b) = (c.as_bytes(), code.as_bytes());
            if a[0] == b[0] && a[1] == b[1] && a[2] == b[2] {
                return Currency { index: i as u8 };
            }
            i += 1;
        }
        panic!("unknown currency constant");
    }

    /// Parses a three-letter code, case-insensitively.
    pub fn parse(code: &str) -> Result<Currency, CurrencyError> {
        let lower = code.to_ascii_lowercase();
        CURRENCIES
            .binary_search_by(|(c, _)| (*c).cmp(lower.as_str()))
            .map(|index| Currency { index: index as u8 })
            .map_err(|_| CurrencyError::Unsupported(code.chars().take(16).collect()))
    }

    pub fn code(self) -> &'static str {
        CURRENCIES[self.index as usize].0
    }

    /// Digits after the decimal point in the major unit (ISO 4217).
    pub fn exponent(self) -> u8 {
        CURRENCIES[self.index as usize].1
    }

    pub fn all() -> impl Iterator<Item = Currency> {
        (0..CURRENCIES.len()).map(|index| Currency { index: index as u8 })
    }

    /// Formats a minor-unit count in the major unit, e.g. 1050 usd -> "10.50 USD".
    pub fn display(self, minor: i128) -> String {
        let exp = self.exponent() as u32;
        let code = self.code().to_ascii_uppercase();
        if exp == 0 {
            return format!("{minor} {code}");
        }
        let scale = 10i128.pow(exp);
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.abs();
        format!("{sign}{}.{:0width$} {code}", abs / scale, abs % scale, width = exp as usize)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A positive amount of money in a currency's minor unit, at most [`Amount::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Amount(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("Invalid integer: {0}. Amounts are whole numbers in the currency's smallest unit, e.g. 1099 for $10.99.")]
    NotInteger(String),
    #[error("Invalid integer: {0}. Amounts are whole numbers in the currency's smallest unit; fractions are not allowed (send 1099 for $10.99).")]
    Fractional(String),
    #[error("This value must be greater than or equal to 1.")]
    NotPositive,
    #[error("Amount must be no more than 99999999 in the currency's smallest unit.")]
    TooLarge,
    #[error("amount arithmetic overflowed")]
    Overflow,
}

impl Amount {
    /// Stripe's maximum charge amount (eight digits of the minor unit).
    pub const MAX: u64 = 99_999_999;

    pub fn new(minor: u64) -> Result<Amount, AmountError> {
        match minor {
            0 => Err(AmountError::NotPositive),
            m if m > Self::MAX => Err(AmountError::TooLarge),
            m => Ok(Amount(m)),
        }
    }

    /// Parses a decimal string as sent in a form body: digits only.
    pub fn parse(text: &str) -> Result<Amount, AmountError> {
        let t = text.trim();
        let shown: String = t.chars().take(32).collect();
        if t.is_empty() {
            return Err(AmountError::NotInteger(shown));
        }
        let (neg, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        if let Some((int, frac)) = digits.split_once('.') {
            let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
            if !int.is_empty() && all_digits(int) && all_digits(frac) {
                // "10.00" is still a fraction of the wire format: reject it rather than guess.
                return Err(AmountError::Fractional(shown));
            }
            return Err(AmountError::NotInteger(shown));
        }
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountError::NotInteger(shown));
        }
        if neg {
            return Err(AmountError::NotPositive);
        }
        // More than 19 digits cannot fit u64, and is far past MAX anyway.
        let value: u64 = match digits.trim_start_matches('0') {
            "" => 0,
            d if d.len() > 19 => return Err(AmountError::TooLarge),
            d => d.parse().map_err(|_| AmountError::TooLarge)?,
        };
        Amount::new(value)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn checked_add(self, other: Amount) -> Result<Amount, AmountError> {
        let sum = self.0.checked_add(other.0).ok_or(AmountError::Overflow)?;
        Amount::new(sum).map_err(|_| AmountError::Overflow)
    }
}

impl TryFrom<u64> for Amount {
    type Error = AmountError;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        Amount::new(v)
    }
}

impl From<Amount> for u64 {
    fn from(a: Amount) -> u64 {
        a.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_edges() {
        assert_eq!(Amount::parse("1").unwrap().get(), 1);
        assert_eq!(Amount::parse("99999999").unwrap().get(), Amount::MAX);
        assert_eq!(Amount::parse("100000000"), Err(AmountError::TooLarge));
        assert_eq!(Amount::parse("0"), Err(AmountError::NotPositive));
        assert_eq!(Amount::parse("-5"), Err(AmountError::NotPositive));
        assert!(matches!(Amount::parse("10.5"), Err(AmountError::Fractional(_))));
        assert!(matches!(Amount::parse("abc"), Err(AmountError::NotInteger(_))));
        assert!(matches!(Amount::parse(""), Err(AmountError::NotInteger(_))));
        assert!(matches!(Amount::parse("1e3"), Err(AmountError::NotInteger(_))));
        assert_eq!(Amount::parse("99999999999999999999999"), Err(AmountError::TooLarge));
        assert_eq!(Amount::parse("0000042").unwrap().get(), 42);
    }

    #[test]
    fn currencies_sorted_and_exponents() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0), "table must stay sorted");
        assert!(CURRENCIES.len() >= 30);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("krw").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("usd").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("kwd").unwrap().exponent(), 3);
        assert_eq!(Currency::parse("bhd").unwrap().exponent(), 3);
        assert!(Currency::parse("xyz").is_err());
        assert!(Currency::parse("").is_err());
        assert_eq!(Currency::KWD.display(1234), "1.234 KWD");
        assert_eq!(Currency::JPY.display(500), "500 JPY");
        assert_eq!(Currency::USD.display(-5), "-0.05 USD");
    }
}
