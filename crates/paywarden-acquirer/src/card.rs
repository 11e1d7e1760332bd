//! Card numbers and security codes as types that cannot leak.
//!
//! [`Pan`] and [`Cvc`] hold their digits in [`Zeroizing`] buffers, so the memory is wiped
//! when they are dropped. Neither implements `Display`, `Serialize` or `Clone`, and their
//! `Debug` output is redacted (`Pan(****4242)`, `Cvc(***)`). The digits of a [`Pan`] are
//! readable only inside this crate, to compute the keyed fingerprint.

use std::fmt;

use paywarden_core::Timestamp;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// A card field that failed validation, with Stripe's error code, parameter and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CardError {
    #[error("Your card number is incorrect.")]
    IncorrectNumber,
    #[error("Your card's expiration month is invalid.")]
    InvalidExpiryMonth,
    #[error("Your card's expiration year is invalid.")]
    InvalidExpiryYear,
    #[error("Your card's security code is invalid.")]
    InvalidCvc,
}

impl CardError {
    /// Stripe's error `code`.
    pub fn code(self) -> &'static str {
        match self {
            CardError::IncorrectNumber => "incorrect_number",
            CardError::InvalidExpiryMonth => "invalid_expiry_month",
            CardError::InvalidExpiryYear => "invalid_expiry_year",
            CardError::InvalidCvc => "invalid_cvc",
        }
    }

    /// The request parameter at fault, as Stripe names it in `param`.
    pub fn param(self) -> &'static str {
        match self {
            CardError::IncorrectNumber => "card[number]",
            CardError::InvalidExpiryMonth => "card[exp_month]",
            CardError::InvalidExpiryYear => "card[exp_year]",
            CardError::InvalidCvc => "card[cvc]",
        }
    }
}

/// A primary account number: 12 to 19 ASCII digits with a valid Luhn checksum.
///
/// `Debug` shows only the last four digits; there is no `Display`, `Serialize` or `Clone`,
/// and the digits are zeroed on drop.
pub struct Pan(Zeroizing<String>);

impl Pan {
    pub const MIN_LEN: usize = 12;
    pub const MAX_LEN: usize = 19;

    /// Parses a card number, ignoring spaces and dashes.
    pub fn parse(input: &str) -> Result<Pan, CardError> {
        // Sized up front so the buffer never reallocates (which would leave a copy behind).
        let mut digits = Zeroizing::new(String::with_capacity(input.len()));
        for c in input.chars() {
            match c {
                ' ' | '-' => {}
                '0'..='9' => digits.push(c),
                _ => return Err(CardError::IncorrectNumber),
            }
        }
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&digits.len()) || !luhn_valid(&digits) {
            return Err(CardError::IncorrectNumber);
        }
        Ok(Pan(digits))
    }

    /// The last four digits, safe to show and store.
    pub fn last4(&self) -> &str {
        let d = self.0.as_str();
        // At least 12 ASCII digits, so the slice is in bounds and on a char boundary.
        &d[d.len() - 4..]
    }

    /// The card brand in Stripe's spelling: `visa`, `mastercard`, `amex`, `discover`,
    /// `jcb`, `diners`, `unionpay` or `unknown`.
    pub fn brand(&self) -> &'static str {
        let p = |n: usize| prefix(&self.0, n);
        if p(1) == 4 {
            "visa"
        } else if (51..=55).contains(&p(2)) || (2221..=2720).contains(&p(4)) {
            "mastercard"
        } else if matches!(p(2), 34 | 37) {
            "amex"
        } else if p(4) == 6011 || (644..=649).contains(&p(3)) || p(2) == 65 {
            "discover"
        } else if (3528..=3589).contains(&p(4)) {
            "jcb"
        } else if matches!(p(2), 36 | 38 | 39) || (300..=305).contains(&p(3)) {
            "diners"
        } else if p(2) == 62 {
            "unionpay"
        } else {
            "unknown"
        }
    }

    /// The full number. Crate-private: used only to fingerprint and to recognise test cards.
    pub(crate) fn digits(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan(****{})", self.last4())
    }
}

/// The numeric value of the first `n` digits (`digits` has at least 12).
fn prefix(digits: &str, n: usize) -> u32 {
    digits.bytes().take(n).fold(0, |acc, b| acc * 10 + u32::from(b - b'0'))
}

/// The Luhn (mod 10) checksum over ASCII digits.
fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 { dd - 9 } else { dd }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A card security code: 3 or 4 ASCII digits.
///
/// `Debug` prints `Cvc(***)`; there is no `Display`, `Serialize` or `Clone`, and the digits
/// are zeroed on drop.
pub struct Cvc(Zeroizing<String>);

impl Cvc {
    pub fn parse(input: &str) -> Result<Cvc, CardError> {
        if !(3..=4).contains(&input.len()) || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::InvalidCvc);
        }
        Ok(Cvc(Zeroizing::new(input.to_owned())))
    }

    /// The number of digits (3, or 4 for American Express).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a parsed code has 3 or 4 digits.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Cvc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvc(***)")
    }
}

/// A card as submitted, validated for format. Expiry against the current date is checked at
/// tokenization ([`CardInput::check_not_expired`]), since it needs the time.
#[derive(Debug)]
pub struct CardInput {
    pub number: Pan,
    pub exp_month: u8,
    pub exp_year: u16,
    pub cvc: Option<Cvc>,
}

impl CardInput {
    /// Parses the fields of a card as they arrive in a form: `exp_month` is `1`..=`12` (one
    /// or two digits), `exp_year` four digits or two (`27` is 2027). Fields are checked in
    /// the order number, month, year, CVC; the first failure is returned.
    pub fn parse(number: &str, exp_month: &str, exp_year: &str, cvc: Option<&str>) -> Result<CardInput, CardError> {
        let number = Pan::parse(number)?;
        let exp_month = parse_month(exp_month)?;
        let exp_year = parse_year(exp_year)?;
        let cvc = cvc.map(Cvc::parse).transpose()?;
        Ok(CardInput { number, exp_month, exp_year, cvc })
    }

    /// Refuses a card whose expiry month is before the month of `now` (UTC): a past year is
    /// [`CardError::InvalidExpiryYear`], an earlier month of this year
    /// [`CardError::InvalidExpiryMonth`]. A card is valid through its whole expiry month.
    /// Also refuses a month outside 1..=12, for inputs built without [`CardInput::parse`].
    pub fn check_not_expired(&self, now: Timestamp) -> Result<(), CardError> {
        if !(1..=12).contains(&self.exp_month) {
            return Err(CardError::InvalidExpiryMonth);
        }
        let (year, month) = year_month(now);
        let exp_year = i32::from(self.exp_year);
        if exp_year < year {
            Err(CardError::InvalidExpiryYear)
        } else if exp_year == year && self.exp_month < month {
            Err(CardError::InvalidExpiryMonth)
        } else {
            Ok(())
        }
    }
}

/// The UTC year and month (1..=12) of a unix timestamp. A timestamp outside what `time`
/// represents (±9999 years) is clamped to the nearest end of its range.
pub(crate) fn year_month(now: Timestamp) -> (i32, u8) {
    let t = OffsetDateTime::from_unix_timestamp(now).unwrap_or(if now < 0 {
        time::PrimitiveDateTime::MIN.assume_utc()
    } else {
        time::PrimitiveDateTime::MAX.assume_utc()
    });
    (t.year(), u8::from(t.month()))
}

fn parse_month(s: &str) -> Result<u8, CardError> {
    let s = s.trim();
    if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CardError::InvalidExpiryMonth);
    }
    match s.parse::<u8>() {
        Ok(m) if (1..=12).contains(&m) => Ok(m),
        _ => Err(CardError::InvalidExpiryMonth),
    }
}

fn parse_year(s: &str) -> Result<u16, CardError> {
    let s = s.trim();
    if !matches!(s.len(), 2 | 4) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CardError::InvalidExpiryYear);
    }
    let y = s.parse::<u16>().map_err(|_| CardError::InvalidExpiryYear)?;
    Ok(if s.len() == 2 { 2000 + y } else { y })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid("4242424242424242"));
        assert!(luhn_valid("378282246310005"));
        assert!(!luhn_valid("4242424242424241"));
    }

    #[test]
    fn brands() {
        let b = |n: &str| Pan::parse(n).map(|p| p.brand());
        assert_eq!(b("4242424242424242"), Ok("visa"));
        assert_eq!(b("5555555555554444"), Ok("mastercard"));
        assert_eq!(b("2223003122003222"), Ok("mastercard"));
        assert_eq!(b("378282246310005"), Ok("amex"));
        assert_eq!(b("6011111111111117"), Ok("discover"));
        assert_eq!(b("3566002020360505"), Ok("jcb"));
        assert_eq!(b("36227206271667"), Ok("diners"));
        assert_eq!(b("3056930009020004"), Ok("diners"));
        assert_eq!(b("6200000000000005"), Ok("unionpay"));
        assert_eq!(b("1234567812345670"), Ok("unknown"));
    }

    #[test]
    fn year_month_of_timestamps() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(1_767_225_600), (2026, 1)); // 2026-01-01T00:00:00Z
        assert_eq!(year_month(1_767_225_599), (2025, 12));
        assert_eq!(year_month(i64::MAX).0, 9999);
    }
}
