//! One migration file: its name (`NNNN_description.sql`) and its first line, which says what it
//! is. Shared with `build.rs` (included there by path), so a migration without its marker
//! fails the build; it therefore uses nothing but `std`.

/// The first line of an additive migration.
pub const MARKER_EXPAND: &str = "-- paywarden: expand";
/// The first line of a migration the previous release cannot run on.
pub const MARKER_CONTRACT: &str = "-- paywarden: contract";

/// What a migration does to the releases before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Additive (new tables, new nullable or defaulted columns, new indexes, backfills): the
    /// previous release keeps working on the migrated schema.
    Expand,
    /// Drops, renames, type or constraint changes: the previous release cannot run on it.
    Contract,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Expand => "expand",
            Kind::Contract => "contract",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "expand" => Some(Kind::Expand),
            "contract" => Some(Kind::Contract),
            _ => None,
        }
    }
}

/// A migration file, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFile<'a> {
    pub version: i64,
    /// The name after the version, underscores as spaces (as sqlx records it).
    pub description: String,
    pub kind: Kind,
    /// The SQL after the marker line: what is executed and checksummed. For the migrations
    /// shipped before markers existed it is byte for byte the file they were applied from.
    pub sql: &'a str,
}

/// How to mark a migration, for every error that asks for it.
pub const HOW_TO_MARK: &str = "its first line must say what it is: `-- paywarden: expand` (additive: new tables, \
new nullable or defaulted columns, new indexes, backfills; the previous release keeps working on it) or \
`-- paywarden: contract` (drops, renames, type or constraint changes the previous release cannot live with); \
see \"Changing the schema\" in README.md";

/// Parses a migration file's name and text.
pub fn parse<'a>(file_name: &str, text: &'a str) -> Result<ParsedFile<'a>, String> {
    let stem = file_name
        .strip_suffix(".sql")
        .ok_or_else(|| "a migration file's name ends in .sql, e.g. 0005_customers.sql".to_string())?;
    let (version, description) = stem
        .split_once('_')
        .filter(|(v, d)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && !d.is_empty())
        .ok_or_else(|| "name it <version>_<description>.sql, e.g. 0005_customers.sql".to_string())?;
    let version: i64 = version
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("version {version} must be a positive integer below 2^63"))?;
    let (first, sql) = match text.split_once('\n') {
        Some((first, rest)) => (first.trim_end_matches('\r'), rest),
        None => (text, ""),
    };
    let kind = match first.trim_end() {
        MARKER_EXPAND => Kind::Expand,
        MARKER_CONTRACT => Kind::Contract,
        _ => return Err(format!("no `-- paywarden: expand|contract` line first: {HOW_TO_MARK}")),
    };
    if sql.trim().is_empty() {
        return Err("the migration has no SQL after its marker line".to_string());
    }
    Ok(ParsedFile { version, description: description.replace('_', " "), kind, sql })
}
