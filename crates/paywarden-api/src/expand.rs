//! `expand[]`: a field that holds another object's id answers with that object instead, as
//! Stripe's: `expand[]=latest_charge` on a PaymentIntent, `expand[]=latest_charge.payment_intent`
//! through it, and in a list each object's fields under `data.` (`expand[]=data.latest_charge`).
//! Paths are checked before anything is read: an unknown one is a 400 naming it and listing
//! what can be expanded; one deeper than [`EXPAND_DEPTH_MAX`] levels is a 400 naming the limit.

use std::collections::BTreeSet;

use serde_json::Value;
use utoipa::openapi::schema::{Array, ArrayBuilder, ObjectBuilder, Type};

use crate::auth::Caller;
use crate::params::Params;
use crate::{wire, ApiError, App};

/// Levels a path may go through, as Stripe's (`a.b.c.d`).
pub const EXPAND_DEPTH_MAX: usize = 4;
/// Paths one request may expand.
pub const EXPAND_PATHS_MAX: usize = 16;

/// The objects expansion knows, and the fields of each that hold another one's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    PaymentIntent,
    Charge,
    Refund,
    PaymentMethod,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::PaymentIntent => "payment_intent",
            Kind::Charge => "charge",
            Kind::Refund => "refund",
            Kind::PaymentMethod => "payment_method",
        }
    }

    fn fields(self) -> &'static [(&'static str, Kind)] {
        match self {
            Kind::PaymentIntent => &[("latest_charge", Kind::Charge), ("payment_method", Kind::PaymentMethod)],
            Kind::Charge => &[("payment_intent", Kind::PaymentIntent)],
            Kind::Refund => &[("charge", Kind::Charge), ("payment_intent", Kind::PaymentIntent)],
            Kind::PaymentMethod => &[],
        }
    }

    /// Every path `kind` can expand, at most [`EXPAND_DEPTH_MAX`] levels deep.
    pub(crate) fn paths(self) -> Vec<String> {
        fn walk(kind: Kind, prefix: &str, depth: usize, out: &mut Vec<String>) {
            if depth == EXPAND_DEPTH_MAX {
                return;
            }
            for (field, to) in kind.fields() {
                let path = if prefix.is_empty() { field.to_string() } else { format!("{prefix}.{field}") };
                out.push(path.clone());
                walk(*to, &path, depth + 1, out);
            }
        }
        let mut out = Vec::new();
        walk(self, "", 0, &mut out);
        out
    }
}

/// The paths a request asked to expand, checked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expand {
    paths: Vec<Vec<String>>,
}

impl Expand {
    /// Takes `expand` for an object of `kind` (in a list with `list`: each path under `data.`).
    pub(crate) fn take(p: &mut Params, kind: Kind, list: bool) -> Result<Expand, ApiError> {
        let Some(given) = p.list("expand")? else { return Ok(Expand::default()) };
        if given.len() > EXPAND_PATHS_MAX {
            return Err(ApiError::invalid(
                "parameter_invalid",
                "expand",
                format!("expand lists {} paths; at most {EXPAND_PATHS_MAX} (EXPAND_PATHS_MAX) in one request.", given.len()),
            ));
        }
        let mut paths = Vec::with_capacity(given.len());
        let mut seen = BTreeSet::new();
        for path in given {
            let segments = match (list, path.strip_prefix("data.")) {
                (true, Some(rest)) => rest,
                (true, None) => {
                    return Err(ApiError::invalid(
                        "parameter_invalid",
                        "expand",
                        format!("In a list, expand the objects' fields under data: data.{} instead of {}.", crate::error::truncate(&path, 64), crate::error::truncate(&path, 64)),
                    ))
                }
                (false, _) => path.as_str(),
            };
            let segments: Vec<String> = segments.split('.').map(str::to_string).collect();
            if segments.len() > EXPAND_DEPTH_MAX {
                return Err(ApiError::invalid(
                    "parameter_invalid",
                    "expand",
                    format!("You cannot expand more than {EXPAND_DEPTH_MAX} levels of a property (EXPAND_DEPTH_MAX); {} goes {} levels deep.", crate::error::truncate(&path, 64), segments.len()),
                ));
            }
            let mut at = kind;
            for segment in &segments {
                match at.fields().iter().find(|(f, _)| f == segment) {
                    Some((_, to)) => at = *to,
                    None => {
                        let can: Vec<&str> = at.fields().iter().map(|(f, _)| *f).collect();
                        let what = if can.is_empty() { "nothing".to_string() } else { can.join(", ") };
                        return Err(ApiError::invalid(
                            "parameter_invalid",
                            "expand",
                            format!(
                                "This property cannot be expanded ({}). A {} can expand: {what}.",
                                crate::error::truncate(segment, 64),
                                at.name()
                            ),
                        ));
                    }
                }
            }
            if seen.insert(segments.clone()) {
                paths.push(segments);
            }
        }
        Ok(Expand { paths })
    }

    /// `object` (of `kind`) as the response body, each id on an asked path replaced by its
    /// object; serialized as it is when nothing was asked.
    pub(crate) async fn render(&self, app: &App, m: &Caller, kind: Kind, object: &impl serde::Serialize) -> Result<Vec<u8>, ApiError> {
        if self.paths.is_empty() {
            return Ok(crate::pipeline::json(object));
        }
        let mut v = serde_json::to_value(object).map_err(ApiError::internal)?;
        self.apply(app, m, kind, &mut v).await?;
        Ok(crate::pipeline::json(&v))
    }

    /// The same for a list of objects of `kind` (their fields under `data.`).
    pub(crate) async fn render_list(&self, app: &App, m: &Caller, kind: Kind, list: &impl serde::Serialize) -> Result<Vec<u8>, ApiError> {
        if self.paths.is_empty() {
            return Ok(crate::pipeline::json(list));
        }
        let mut v = serde_json::to_value(list).map_err(ApiError::internal)?;
        for item in v.get_mut("data").and_then(Value::as_array_mut).into_iter().flatten() {
            self.apply(app, m, kind, item).await?;
        }
        Ok(crate::pipeline::json(&v))
    }

    async fn apply(&self, app: &App, m: &Caller, kind: Kind, v: &mut Value) -> Result<(), ApiError> {
        for path in &self.paths {
            expand_path(app, m, kind, v, path).await?;
        }
        Ok(())
    }
}

/// Expands one path below `v`; an id already expanded (by a shorter path) is walked into.
async fn expand_path(app: &App, m: &Caller, kind: Kind, v: &mut Value, path: &[String]) -> Result<(), ApiError> {
    let mut node = v;
    let mut at = kind;
    for segment in path {
        let Some((_, to)) = at.fields().iter().find(|(f, _)| f == segment) else { return Ok(()) };
        let Some(slot) = node.get_mut(segment.as_str()) else { return Ok(()) };
        if let Some(id) = slot.as_str().map(str::to_string) {
            match load(app, m, *to, &id).await? {
                Some(object) => *slot = object,
                None => return Ok(()),
            }
        }
        if !slot.is_object() {
            return Ok(());
        }
        node = slot;
        at = *to;
    }
    Ok(())
}

/// The object `id` of `kind`, as the API shows it.
async fn load(app: &App, m: &Caller, kind: Kind, id: &str) -> Result<Option<Value>, ApiError> {
    let v = match kind {
        Kind::PaymentIntent => app.store.payment_intent(&m.id, id).await.map_err(ApiError::internal)?.map(|pi| serde_json::to_value(app.intent_object(&pi))),
        Kind::Charge => app.store.charge(&m.id, id).await.map_err(ApiError::internal)?.map(|c| serde_json::to_value(wire::charge(&c))),
        Kind::Refund => app.store.refund(&m.id, id).await.map_err(ApiError::internal)?.map(|r| serde_json::to_value(wire::refund(&r))),
        Kind::PaymentMethod => app.store.payment_method(&m.id, id).await.map_err(ApiError::internal)?.map(|pm| serde_json::to_value(wire::payment_method(&pm))),
    };
    v.transpose().map_err(ApiError::internal)
}

/// The `expand` query parameter's schema for `kind` (`data.` before each path in a list).
pub(crate) fn schema(kind: Kind, list: bool) -> Array {
    let paths = kind.paths().into_iter().map(|p| if list { format!("data.{p}") } else { p });
    ArrayBuilder::new()
        .description(Some(format!(
            "Fields to answer with the object they name instead of its id, at most {EXPAND_DEPTH_MAX} levels deep and {EXPAND_PATHS_MAX} paths; sent as expand[]=..."
        )))
        .max_items(Some(EXPAND_PATHS_MAX))
        .items(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(paths)))
        .build()
}

fn payment_intent_paths() -> Array {
    schema(Kind::PaymentIntent, false)
}

fn payment_intent_list_paths() -> Array {
    schema(Kind::PaymentIntent, true)
}

fn charge_paths() -> Array {
    schema(Kind::Charge, false)
}

fn refund_paths() -> Array {
    schema(Kind::Refund, false)
}

fn refund_list_paths() -> Array {
    schema(Kind::Refund, true)
}

// The documents of the `expand` query parameter, per object; what is parsed is [`Expand`].

/// `expand` on a PaymentIntent.
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExpandPaymentIntent {
    #[param(schema_with = payment_intent_paths, nullable = false)]
    pub expand: Option<Vec<String>>,
}

/// `expand` on a list of PaymentIntents.
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExpandPaymentIntents {
    #[param(schema_with = payment_intent_list_paths, nullable = false)]
    pub expand: Option<Vec<String>>,
}

/// `expand` on a charge.
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExpandCharge {
    #[param(schema_with = charge_paths, nullable = false)]
    pub expand: Option<Vec<String>>,
}

/// `expand` on a refund.
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExpandRefund {
    #[param(schema_with = refund_paths, nullable = false)]
    pub expand: Option<Vec<String>>,
}

/// `expand` on a list of refunds.
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExpandRefunds {
    #[param(schema_with = refund_list_paths, nullable = false)]
    pub expand: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_go_four_levels_and_no_further() {
        let pi = Kind::PaymentIntent.paths();
        assert!(pi.contains(&"latest_charge".to_string()) && pi.contains(&"latest_charge.payment_intent.latest_charge.payment_intent".to_string()), "{pi:?}");
        assert!(pi.iter().all(|p| p.split('.').count() <= EXPAND_DEPTH_MAX), "{pi:?}");
        assert!(Kind::PaymentMethod.paths().is_empty());
        let take = |q: &str, list: bool| Expand::take(&mut Params::from_form(q.as_bytes()).unwrap(), Kind::PaymentIntent, list);
        assert_eq!(take("expand[]=latest_charge.payment_intent.latest_charge.payment_intent", false).unwrap().paths.len(), 1);
        let e = take("expand[]=latest_charge.payment_intent.latest_charge.payment_intent.latest_charge", false).unwrap_err();
        assert!(e.message.contains("more than 4 levels") && e.param.as_deref() == Some("expand"), "{}", e.message);
        let e = take("expand[]=latest_chrage", false).unwrap_err();
        assert!(e.message.contains("(latest_chrage)") && e.message.contains("latest_charge, payment_method"), "{}", e.message);
        let e = take("expand[]=latest_charge", true).unwrap_err();
        assert!(e.message.contains("data.latest_charge"), "{}", e.message);
        assert_eq!(take("expand[]=data.latest_charge&expand[]=data.latest_charge", true).unwrap().paths.len(), 1, "a path twice is one");
        let many: Vec<String> = (0..=EXPAND_PATHS_MAX).map(|i| format!("expand[{i}]=latest_charge")).collect();
        assert!(take(&many.join("&"), false).unwrap_err().message.contains("EXPAND_PATHS_MAX"));
    }
}
