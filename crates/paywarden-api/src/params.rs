//! Request parameters in Stripe's two body formats (form-encoded with bracket notation, and
//! JSON) and in query strings, read through one type, and parsed at the door into each
//! operation's typed request ([`FromParams`]). Every parameter is taken out by name; whatever
//! is left once the request is parsed is an unknown parameter and a 400 naming it, so a typo
//! never passes silently.
//!
//! An operation's request type is also what the OpenAPI document shows for it (it derives
//! `ToSchema` or `IntoParams`); the test `every_operation_takes_what_its_schema_lists` holds
//! the two together: the names an operation's parser takes are its schema's properties.

use std::collections::BTreeMap;

use paywarden_core::{Amount, AmountError, Currency};
use serde_json::Value;

use crate::error::{metadata_error, truncate, ApiError};

/// Levels of nesting allowed: `amount` is 1, `card[number]` is 2, `a[b][c]` is 3.
pub const PARAMS_DEPTH_MAX: usize = 3;
/// Distinct parameters (leaves) allowed in one request.
pub const PARAMS_COUNT_MAX: usize = 256;
/// Characters allowed in one string value (metadata has its own, lower limits).
pub const PARAM_VALUE_CHARS_MAX: usize = 5000;
/// Characters allowed in `description`.
pub const DESCRIPTION_CHARS_MAX: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct Params {
    map: BTreeMap<String, Value>,
    /// Name of the enclosing parameter, for error messages (`card[number]`).
    prefix: Option<String>,
    /// Every name a parser asked for, given or not (the schema test's record).
    #[cfg(test)]
    asked: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

/// An operation's parameters, parsed whole before the operation runs: what its handler is
/// given, and (through `ToSchema` or `IntoParams`) what the OpenAPI document says it takes.
pub trait FromParams: Sized {
    /// Takes every parameter the operation knows out of `p`, checked; [`parse`] refuses
    /// whatever is left.
    fn from_params(p: &mut Params) -> Result<Self, ApiError>;
}

/// Parses `p` into `T`: every parameter taken, any other one a 400 naming it.
pub fn parse<T: FromParams>(mut p: Params) -> Result<T, ApiError> {
    let t = T::from_params(&mut p)?;
    p.finish()?;
    Ok(t)
}

/// An operation that takes no parameters (a retrieve by id): any parameter is unknown.
pub struct NoParams;

impl FromParams for NoParams {
    fn from_params(_: &mut Params) -> Result<Self, ApiError> {
        Ok(NoParams)
    }
}

/// `metadata` as sent on an update: pairs to set (a value "" removes its key), or an empty
/// `metadata` ("" or `{}`), which removes every key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MetadataPatch {
    /// Not sent: nothing changes.
    #[default]
    Keep,
    Clear,
    Set(Vec<(String, String)>),
}

impl MetadataPatch {
    /// The pairs to apply over `existing` ([`paywarden_core::Metadata::merged`] takes them).
    pub fn pairs(self, existing: &paywarden_core::Metadata) -> Vec<(String, String)> {
        match self {
            MetadataPatch::Keep => Vec::new(),
            MetadataPatch::Clear => existing.iter().map(|(k, _)| (k.clone(), String::new())).collect(),
            MetadataPatch::Set(pairs) => pairs,
        }
    }
}

impl Params {
    pub fn empty() -> Params {
        Params::default()
    }

    /// Parses `application/x-www-form-urlencoded` bodies and query strings.
    pub fn from_form(bytes: &[u8]) -> Result<Params, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Params::empty());
        }
        let pairs = bytes.split(|b| *b == b'&').filter(|p| !p.is_empty()).count();
        if pairs > PARAMS_COUNT_MAX {
            return Err(too_many(pairs));
        }
        let config = serde_qs::Config::new()
            .max_depth(PARAMS_DEPTH_MAX)
            .use_form_encoding(true)
            .duplicate_key_behavior(serde_qs::DuplicateKeyBehavior::Error);
        let value: Value = config.deserialize_bytes(bytes).map_err(|e| {
            ApiError::invalid(
                "parameters_invalid",
                "body",
                format!(
                    "Invalid form-encoded body: {}. Send key=value pairs joined by '&', with nested keys in brackets (card[number]=...), each key once, nesting at most {PARAMS_DEPTH_MAX} levels.",
                    truncate(&e.to_string(), 200)
                ),
            )
        })?;
        check_shape(&value)?;
        Params::from_value(value)
    }

    /// Parses `application/json` bodies: one object.
    pub fn from_json(bytes: &[u8]) -> Result<Params, ApiError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::invalid("parameters_invalid", "body", format!("Invalid JSON body: {e}. Send one JSON object of parameters."))
        })?;
        if !value.is_object() {
            return Err(ApiError::invalid("parameters_invalid", "body", "Invalid JSON body: send one JSON object of parameters."));
        }
        check_shape(&value)?;
        Params::from_value(value)
    }

    fn from_value(value: Value) -> Result<Params, ApiError> {
        match value {
            Value::Object(m) => Ok(Params { map: m.into_iter().collect(), ..Params::default() }),
            Value::Null => Ok(Params::empty()),
            _ => Err(ApiError::invalid("parameters_invalid", "body", "Parameters must be key=value pairs.")),
        }
    }

    fn name(&self, key: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}[{key}]"),
            None => key.to_string(),
        }
    }

    /// Takes a parameter's raw value out (and, in tests, records that it was asked for).
    fn take(&mut self, key: &str) -> Option<Value> {
        #[cfg(test)]
        if let Ok(mut asked) = self.asked.lock() {
            asked.insert(self.name(key));
        }
        self.map.remove(key)
    }

    /// A nested object's parameters, named under `name`.
    fn child(&self, map: BTreeMap<String, Value>, name: String) -> Params {
        Params {
            map,
            prefix: Some(name),
            #[cfg(test)]
            asked: std::sync::Arc::clone(&self.asked),
        }
    }

    /// Every name a parser asked for so far, nested ones in brackets.
    #[cfg(test)]
    pub(crate) fn asked(&self) -> std::collections::BTreeSet<String> {
        self.asked.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// A canonical rendering of all parameters, for the idempotency fingerprint.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(&self.map).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Takes a string parameter. Numbers and booleans (from JSON) are accepted as their text.
    pub fn str(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        let name = self.name(key);
        string_value(&name, self.take(key))
    }

    pub fn required_str(&mut self, key: &str) -> Result<String, ApiError> {
        let name = self.name(key);
        match self.str(key)? {
            None => Err(ApiError::missing(&name)),
            Some(s) if s.is_empty() => Err(ApiError::invalid(
                "parameter_invalid_empty",
                &name,
                format!("You passed an empty string for '{name}'. We assume empty values are an attempt to unset a parameter; however '{name}' cannot be unset. You should remove '{name}' from your request or supply a non-empty value."),
            )),
            Some(s) => Ok(s),
        }
    }

    /// Takes a non-empty string that must be an id with `prefix`.
    pub fn id(&mut self, key: &str, prefix: &str) -> Result<Option<String>, ApiError> {
        let name = self.name(key);
        match self.str(key)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) if s.len() <= 255 && s.starts_with(prefix) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => Ok(Some(s)),
            Some(s) => Err(ApiError::invalid(
                "resource_missing",
                &name,
                format!("No such {}: '{}'; {name} takes an id that starts with {prefix}.", object_name(prefix), truncate(&s, 64)),
            )),
        }
    }

    pub fn amount(&mut self, key: &str) -> Result<Option<Amount>, ApiError> {
        let name = self.name(key);
        let parsed = match self.take(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => Amount::parse(&s),
            Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Amount::new(u),
                (None, Some(_)) => Err(AmountError::NotPositive),
                (None, None) => Amount::parse(&n.to_string()),
            },
            Some(Value::Bool(b)) => Err(AmountError::NotInteger(b.to_string())),
            Some(_) => {
                return Err(ApiError::invalid(
                    "parameter_invalid_integer",
                    &name,
                    format!("Invalid integer: {name} must be a single whole number, not a list or an object; send {name} once."),
                ));
            }
        };
        parsed.map(Some).map_err(|e| amount_error(&name, e))
    }

    pub fn required_amount(&mut self, key: &str) -> Result<Amount, ApiError> {
        let name = self.name(key);
        self.amount(key)?.ok_or_else(|| ApiError::missing(&name))
    }

    pub fn currency(&mut self, key: &str) -> Result<Option<Currency>, ApiError> {
        let name = self.name(key);
        match self.str(key)? {
            None => Ok(None),
            Some(s) => Currency::parse(&s).map(Some).map_err(|e| ApiError::invalid("invalid_currency", &name, e.to_string())),
        }
    }

    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, ApiError> {
        let name = self.name(key);
        match self.str(key)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::invalid(
                "parameter_invalid_boolean",
                &name,
                format!("Invalid boolean: {}. {name} takes true or false.", truncate(other, 32)),
            )),
        }
    }

    pub fn integer(&mut self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let name = self.name(key);
        match self.str(key)? {
            None => Ok(None),
            Some(s) => match s.trim().parse::<i64>() {
                Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
                Ok(_) => Err(ApiError::invalid(
                    "parameter_invalid_integer",
                    &name,
                    format!("{name} must be between {min} and {max}."),
                )),
                Err(_) => Err(ApiError::invalid(
                    "parameter_invalid_integer",
                    &name,
                    format!("Invalid integer: {}. {name} takes a whole number from {min} to {max}.", truncate(&s, 32)),
                )),
            },
        }
    }

    /// Takes a parameter that must be one of `allowed`.
    pub fn one_of(&mut self, key: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
        let name = self.name(key);
        match self.str(key)? {
            None => Ok(None),
            Some(s) if allowed.contains(&s.as_str()) => Ok(Some(s)),
            Some(s) => Err(ApiError::invalid(
                "parameter_invalid",
                &name,
                format!("Invalid {name}: '{}'. It must be one of: {}.", truncate(&s, 64), allowed.join(", ")),
            )),
        }
    }

    /// Takes a nested object (`card[...]`, `metadata[...]`). An empty string means "unset".
    pub fn object(&mut self, key: &str) -> Result<Option<Params>, ApiError> {
        let name = self.name(key);
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(Some(self.child(BTreeMap::new(), name))),
            Some(Value::Object(m)) => Ok(Some(self.child(m.into_iter().collect(), name))),
            Some(_) => Err(ApiError::invalid(
                "parameter_invalid",
                &name,
                format!("Invalid {name}: it must be an object, sent as {name}[key]=value."),
            )),
        }
    }

    /// Takes a list (`a[]=x`, `a[0]=x`, or a JSON array) of strings.
    pub fn list(&mut self, key: &str) -> Result<Option<Vec<String>>, ApiError> {
        let name = self.name(key);
        let items: Vec<Value> = match self.take(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(a)) => a,
            Some(Value::Object(m)) => {
                let mut indexed: Vec<(usize, Value)> = Vec::with_capacity(m.len());
                for (k, v) in m {
                    let i = k.parse::<usize>().map_err(|_| {
                        ApiError::invalid("parameter_invalid", &name, format!("Invalid {name}: it must be a list, sent as {name}[]=value."))
                    })?;
                    indexed.push((i, v));
                }
                indexed.sort_by_key(|(i, _)| *i);
                indexed.into_iter().map(|(_, v)| v).collect()
            }
            Some(v @ Value::String(_)) => vec![v],
            Some(_) => {
                return Err(ApiError::invalid("parameter_invalid", &name, format!("Invalid {name}: it must be a list of strings.")));
            }
        };
        items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::invalid("parameter_invalid", &name, format!("Invalid {name}: every item must be a string."))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Takes `metadata` as sent on an update ([`MetadataPatch`]).
    pub fn metadata_patch(&mut self) -> Result<MetadataPatch, ApiError> {
        let Some(mut m) = self.object("metadata")? else { return Ok(MetadataPatch::Keep) };
        if m.map.is_empty() {
            return Ok(MetadataPatch::Clear);
        }
        let keys: Vec<String> = m.map.keys().cloned().collect();
        let mut pairs = Vec::with_capacity(keys.len());
        for k in keys {
            // The keys are the merchant's, not parameters: taken without recording them.
            let v = string_value(&m.name(&k), m.map.remove(&k))?.unwrap_or_default();
            pairs.push((k, v));
        }
        Ok(MetadataPatch::Set(pairs))
    }

    /// Takes `metadata` for a new object: checked against Stripe's limits.
    pub fn metadata_new(&mut self) -> Result<paywarden_core::Metadata, ApiError> {
        let pairs = self.metadata_patch()?.pairs(&paywarden_core::Metadata::default());
        paywarden_core::Metadata::from_pairs(pairs).map_err(metadata_error)
    }

    /// Takes `description`: at most [`DESCRIPTION_CHARS_MAX`] characters; "" is kept (on an
    /// update it removes the description).
    pub fn description(&mut self) -> Result<Option<String>, ApiError> {
        let d = self.str("description")?;
        if let Some(d) = &d
            && d.chars().count() > DESCRIPTION_CHARS_MAX {
                return Err(ApiError::invalid(
                    "parameter_invalid_string",
                    "description",
                    format!("description is too long: at most {DESCRIPTION_CHARS_MAX} characters."),
                ));
            }
        Ok(d)
    }

    /// Ends parsing: any parameter not taken is unknown.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::unknown(&self.name(k))),
        }
    }
}

/// Stripe's cursor pagination, the query of every list; newest first.
#[derive(Debug, Clone, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 100, default 10.
    #[param(value_type = Option<u32>, nullable = false, minimum = 1, maximum = 100)]
    pub limit: u32,
    /// An object id of the listed kind: return objects older than it (not with ending_before).
    #[param(nullable = false, max_length = 255)]
    pub starting_after: Option<String>,
    /// An object id of the listed kind: return objects newer than it (not with starting_after).
    #[param(nullable = false, max_length = 255)]
    pub ending_before: Option<String>,
}

impl ListQuery {
    /// Most objects a list returns; and the default.
    pub const LIMIT_MAX: i64 = 100;
    pub const LIMIT_DEFAULT: u32 = 10;

    /// Takes the page parameters; cursors must be ids with `prefix`.
    pub fn take(p: &mut Params, prefix: &str) -> Result<ListQuery, ApiError> {
        let limit = p.integer("limit", 1, Self::LIMIT_MAX)?.map_or(Self::LIMIT_DEFAULT, |l| l as u32);
        let starting_after = p.id("starting_after", prefix)?;
        let ending_before = p.id("ending_before", prefix)?;
        if starting_after.is_some() && ending_before.is_some() {
            return Err(ApiError::invalid(
                "parameter_invalid",
                "ending_before",
                "You may only specify one of these parameters: starting_after, ending_before.",
            ));
        }
        Ok(ListQuery { limit, starting_after, ending_before })
    }

    /// Maps the list's store error; an unknown cursor names the parameter that carried it.
    pub fn map_error(&self) -> impl Fn(paywarden_store::StoreError) -> ApiError + '_ {
        move |e| match e {
            paywarden_store::StoreError::CursorNotFound { object, id } => {
                let param = if self.ending_before.as_deref() == Some(id.as_str()) { "ending_before" } else { "starting_after" };
                ApiError::no_such(object, &id, Some(param))
            }
            e => ApiError::internal(e),
        }
    }

    pub fn page(&self) -> paywarden_store::Page {
        paywarden_store::Page { limit: self.limit, starting_after: self.starting_after.clone(), ending_before: self.ending_before.clone() }
    }
}

/// A parameter's value as a string: numbers and booleans (from JSON) as their text, at most
/// [`PARAM_VALUE_CHARS_MAX`] characters, never a list or an object.
fn string_value(name: &str, value: Option<Value>) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() > PARAM_VALUE_CHARS_MAX => Err(ApiError::invalid(
            "parameter_invalid_string",
            name,
            format!("{name} is too long: at most {PARAM_VALUE_CHARS_MAX} characters."),
        )),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(ApiError::invalid(
            "parameter_invalid_string",
            name,
            format!("Invalid string: {name} must be a single value, not a list or an object."),
        )),
    }
}

fn object_name(prefix: &str) -> &'static str {
    match prefix {
        "pi_" => "payment_intent",
        "pm_" => "PaymentMethod",
        "ch_" => "charge",
        "re_" => "refund",
        _ => "object",
    }
}

/// Refuses parameter trees that are too wide or too deep, whatever the body format.
fn check_shape(value: &Value) -> Result<(), ApiError> {
    let n = leaves(value);
    if n > PARAMS_COUNT_MAX {
        return Err(too_many(n));
    }
    if depth(value) > PARAMS_DEPTH_MAX {
        return Err(ApiError::invalid(
            "parameters_invalid",
            "body",
            format!("Parameters nest too deeply: at most {PARAMS_DEPTH_MAX} levels, as in a[b][c]."),
        ));
    }
    Ok(())
}

fn too_many(n: usize) -> ApiError {
    ApiError::invalid(
        "parameters_invalid",
        "body",
        format!("Too many parameters: {n}; a request may carry at most {PARAMS_COUNT_MAX}."),
    )
}

fn leaves(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.values().map(leaves).sum(),
        Value::Array(a) => a.iter().map(leaves).sum(),
        _ => 1,
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn amount_error(name: &str, e: AmountError) -> ApiError {
    match e {
        AmountError::NotInteger(_) | AmountError::Fractional(_) => ApiError::invalid("parameter_invalid_integer", name, e.to_string()),
        AmountError::NotPositive => {
            ApiError::invalid("amount_too_small", name, format!("{name} must be at least 1 (in the currency's smallest unit)."))
        }
        AmountError::TooLarge | AmountError::Overflow => ApiError::invalid(
            "amount_too_large",
            name,
            format!("{name} must be no more than {} (in the currency's smallest unit).", Amount::MAX),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_nest_and_lists_index() {
        let mut p = Params::from_form(b"amount=100&metadata[order]=1&card[number]=4242+4242&types[0]=card&types[1]=x&e[]=a").unwrap();
        assert_eq!(p.amount("amount").unwrap().unwrap().get(), 100);
        let mut card = p.object("card").unwrap().unwrap();
        assert_eq!(card.str("number").unwrap().unwrap(), "4242 4242");
        card.finish().unwrap();
        assert_eq!(p.list("types").unwrap().unwrap(), vec!["card", "x"]);
        assert_eq!(p.list("e").unwrap().unwrap(), vec!["a"]);
        let md = p.metadata_patch().unwrap();
        assert_eq!(md, MetadataPatch::Set(vec![("order".to_string(), "1".to_string())]));
        p.finish().unwrap();
    }

    #[test]
    fn unknown_and_duplicate_and_bad_amounts() {
        let p = Params::from_form(b"amount=1&bogus=2").unwrap();
        let mut p2 = p.clone();
        p2.amount("amount").unwrap();
        let e = p2.finish().unwrap_err();
        assert_eq!(e.param.as_deref(), Some("bogus"));
        // A repeated scalar arrives as a list, which a scalar parameter refuses.
        let mut dup = Params::from_form(b"a=1&a=2").unwrap();
        assert_eq!(dup.str("a").unwrap_err().code.as_deref(), Some("parameter_invalid_string"));
        for (body, code) in [
            ("amount=0", "amount_too_small"),
            ("amount=-1", "amount_too_small"),
            ("amount=1.5", "parameter_invalid_integer"),
            ("amount=abc", "parameter_invalid_integer"),
            ("amount=100000000", "amount_too_large"),
        ] {
            let mut p = Params::from_form(body.as_bytes()).unwrap();
            assert_eq!(p.amount("amount").unwrap_err().code.as_deref(), Some(code), "{body}");
        }
        let mut j = Params::from_json(br#"{"amount": 1.5}"#).unwrap();
        assert_eq!(j.amount("amount").unwrap_err().code.as_deref(), Some("parameter_invalid_integer"));
        let mut j = Params::from_json(br#"{"amount": -3}"#).unwrap();
        assert_eq!(j.amount("amount").unwrap_err().code.as_deref(), Some("amount_too_small"));
    }

    #[test]
    fn depth_and_count_limits() {
        assert!(Params::from_form(b"a[b][c]=1").is_ok());
        assert!(Params::from_form(b"a[b][c][d]=1").is_err());
        assert!(Params::from_json(br#"{"a":{"b":{"c":1}}}"#).is_ok());
        assert!(Params::from_json(br#"{"a":{"b":{"c":{"d":1}}}}"#).is_err());
        let many: Vec<String> = (0..=PARAMS_COUNT_MAX).map(|i| format!("k{i}=v")).collect();
        assert!(Params::from_form(many.join("&").as_bytes()).is_err());
        let ok: Vec<String> = (0..PARAMS_COUNT_MAX).map(|i| format!("k{i}=v")).collect();
        assert!(Params::from_form(ok.join("&").as_bytes()).is_ok());
    }
}
