//! CQL text as ringvault must understand it, shared by the coordinator (schema replay) and the
//! worker (the only statements it runs): a tokenizer that knows string literals (`'..'` with `''`
//! escapes), double-quoted identifiers (`".."` with `""`), `--`/`//` line comments, `/* */`
//! block comments and `$$..$$` bodies; a statement splitter built on it; a parser of the head of
//! the schema statements `DESCRIBE SCHEMA` emits (which object, in which keyspace, on which
//! table); and the check that a statement is exactly the schema object a request names.
//!
//! Everything works on token boundaries, never on byte offsets inside a token, so non-ASCII text
//! (quoted column names, comments, literals) cannot make it panic.
use std::fmt;

/// Keyspaces that are never backed up, restored or created: node-local state (`system`), the
/// schema itself (recreated from `DESCRIBE SCHEMA`), and the virtual keyspaces.
pub const NON_DATA_KEYSPACES: &[&str] = &[
    "system",
    "system_schema",
    "system_views",
    "system_virtual_schema",
];

/// Keyspaces Cassandra owns: a schema request may never create anything in them.
pub const CASSANDRA_KEYSPACES: &[&str] = &[
    "system",
    "system_schema",
    "system_views",
    "system_virtual_schema",
    "system_auth",
    "system_distributed",
    "system_traces",
];

/// Why CQL text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CqlError {
    /// The text does not tokenize (an unterminated literal, identifier or comment).
    #[error("CQL syntax: {0}")]
    Syntax(String),
    /// A statement kind that a schema request may never run.
    #[error(
        "statement kind {kind} is not allowed: only CREATE KEYSPACE/TYPE/TABLE/INDEX/MATERIALIZED VIEW/FUNCTION/AGGREGATE … IF NOT EXISTS and ALTER TABLE … DROP col USING TIMESTAMP n (or the ADD of a re-added column) are"
    )]
    NotAllowed { kind: String },
    /// An object in one of Cassandra's own keyspaces.
    #[error("{kind} in keyspace {keyspace} is not allowed: it belongs to Cassandra")]
    SystemKeyspace { kind: String, keyspace: String },
    /// More than one statement where one is expected.
    #[error("{count} statements where exactly one is expected (a ';' is allowed only at the end)")]
    Several { count: usize },
    /// No statement at all.
    #[error("no statement")]
    Empty,
    /// A statement of an allowed kind that is not well formed or does not match the request.
    #[error("{kind}: {reason}")]
    Invalid { kind: String, reason: String },
}

impl CqlError {
    /// Whether the refusal is about what the statement does (PERMISSION_DENIED) rather than how
    /// it is written (INVALID_ARGUMENT).
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            CqlError::NotAllowed { .. } | CqlError::SystemKeyspace { .. }
        )
    }
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Letters, digits and `_`: a keyword, an unquoted identifier or a number.
    Word,
    /// A `"double-quoted"` identifier.
    QuotedName,
    /// A `'string literal'`.
    Str,
    /// A `$$dollar-quoted$$` body.
    Dollar,
    /// A UUID constant.
    Uuid,
    /// Any other single character (punctuation, operators, stray non-ASCII).
    Symbol(char),
}

/// One token: its kind and where it lies in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    /// The token's source text (quotes included).
    pub text: &'a str,
    /// Byte offsets of the token in the text; always character boundaries.
    pub start: usize,
    pub end: usize,
}

impl Token<'_> {
    /// Whether this is the unquoted word `kw` (keywords are case-insensitive).
    pub fn is_kw(&self, kw: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(kw)
    }

    /// Whether this is the symbol `c`.
    pub fn is_sym(&self, c: char) -> bool {
        self.kind == TokenKind::Symbol(c)
    }

    /// The identifier this token names, with CQL's case rule: unquoted words are
    /// case-insensitive (lowercased), quoted names keep their case (`""` is one `"`).
    pub fn ident(&self) -> Option<String> {
        match self.kind {
            TokenKind::Word if starts_like_ident(self.text) => Some(self.text.to_ascii_lowercase()),
            TokenKind::QuotedName => {
                let inner = &self.text[1..self.text.len() - 1];
                Some(inner.replace("\"\"", "\""))
            }
            _ => None,
        }
    }
}

fn starts_like_ident(w: &str) -> bool {
    w.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_uuid_at(b: &[u8]) -> bool {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let mut i = 0;
    for (g, len) in GROUPS.iter().enumerate() {
        if g > 0 {
            if b.get(i) != Some(&b'-') {
                return false;
            }
            i += 1;
        }
        for _ in 0..*len {
            if !b.get(i).is_some_and(|c| c.is_ascii_hexdigit()) {
                return false;
            }
            i += 1;
        }
    }
    !b.get(i).is_some_and(|c| is_word_byte(*c))
}

/// Line and column (1-based, in characters) of a byte offset, for messages.
fn position(text: &str, at: usize) -> String {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {col}")
}

/// Splits CQL text into tokens, dropping whitespace and comments.
pub fn tokenize(text: &str) -> Result<Vec<Token<'_>>, CqlError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = match c {
            _ if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = skip_line(b, i);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = skip_line(b, i);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                match find(b, i + 2, b"*/") {
                    Some(e) => i = e + 2,
                    None => {
                        return Err(CqlError::Syntax(format!(
                            "unterminated /* comment starting at {}",
                            position(text, start)
                        )));
                    }
                }
                continue;
            }
            b'\'' | b'"' => {
                i = quoted_end(b, i, c).ok_or_else(|| {
                    CqlError::Syntax(format!(
                        "unterminated {} starting at {}",
                        if c == b'\'' {
                            "string literal"
                        } else {
                            "quoted identifier"
                        },
                        position(text, start)
                    ))
                })?;
                if c == b'\'' {
                    TokenKind::Str
                } else {
                    TokenKind::QuotedName
                }
            }
            b'$' if b.get(i + 1) == Some(&b'$') => {
                match find(b, i + 2, b"$$") {
                    Some(e) => i = e + 2,
                    None => {
                        return Err(CqlError::Syntax(format!(
                            "unterminated $$ body starting at {}",
                            position(text, start)
                        )));
                    }
                }
                TokenKind::Dollar
            }
            _ if c.is_ascii_hexdigit() && is_uuid_at(&b[i..]) => {
                i += 36;
                TokenKind::Uuid
            }
            _ if is_word_byte(c) => {
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
                TokenKind::Word
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
                i += ch.len_utf8().max(1);
                TokenKind::Symbol(ch)
            }
        };
        out.push(Token {
            kind,
            text: &text[start..i],
            start,
            end: i,
        });
    }
    Ok(out)
}

fn skip_line(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    i
}

fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    (from..b.len().saturating_sub(pat.len() - 1)).find(|&j| &b[j..j + pat.len()] == pat)
}

/// End (exclusive) of a literal opened by `q` at `i`; a doubled `q` is an escaped one.
fn quoted_end(b: &[u8], i: usize, q: u8) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == q {
            if b.get(j + 1) == Some(&q) {
                j += 2;
                continue;
            }
            return Some(j + 1);
        }
        j += 1;
    }
    None
}

/// Whether the name `DESCRIBE` printed (quoted if it needed quotes, or raw) is `ident`.
pub fn names_match(printed: &str, ident: &str) -> bool {
    if printed == ident {
        return true;
    }
    match tokenize(printed).as_deref() {
        Ok([t]) if t.kind == TokenKind::QuotedName => t.ident().as_deref() == Some(ident),
        _ => false,
    }
}

/// Splits a CQL script into statements at the `;` that are outside literals, quoted names,
/// comments and `$$` bodies. Each statement keeps its text (inner comments included) with its
/// `;`; text holding only comments or whitespace yields nothing.
pub fn split_statements(text: &str) -> Result<Vec<String>, CqlError> {
    let tokens = tokenize(text)?;
    let mut out = Vec::new();
    let mut first: Option<usize> = None;
    for t in &tokens {
        if t.is_sym(';') {
            if let Some(s) = first.take() {
                out.push(text[s..t.end].to_string());
            }
        } else if first.is_none() {
            first = Some(t.start);
        }
    }
    if let (Some(s), Some(last)) = (first, tokens.last()) {
        out.push(format!("{};", &text[s..last.end]));
    }
    Ok(out)
}

/// The kinds of schema object a restore creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Keyspace,
    Type,
    Table,
    Index,
    View,
    Function,
    Aggregate,
    /// `ALTER TABLE t DROP c USING TIMESTAMP n`: a dropped column's tombstone.
    DroppedColumn,
    /// `ALTER TABLE t ADD c type`: a column dropped and added again.
    ReaddedColumn,
}

impl ObjectKind {
    /// The kind as `DESCRIBE SCHEMA` and the proto name it.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Keyspace => "keyspace",
            ObjectKind::Type => "type",
            ObjectKind::Table => "table",
            ObjectKind::Index => "index",
            ObjectKind::View => "view",
            ObjectKind::Function => "function",
            ObjectKind::Aggregate => "aggregate",
            ObjectKind::DroppedColumn => "dropped_column",
            ObjectKind::ReaddedColumn => "readded_column",
        }
    }

    /// Parses [`ObjectKind::as_str`] (and `DESCRIBE`'s `materialized_view`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "keyspace" => ObjectKind::Keyspace,
            "type" => ObjectKind::Type,
            "table" => ObjectKind::Table,
            "index" => ObjectKind::Index,
            // `DESCRIBE SCHEMA` names views `materialized_view`.
            "view" | "materialized_view" => ObjectKind::View,
            "function" => ObjectKind::Function,
            "aggregate" => ObjectKind::Aggregate,
            "dropped_column" => ObjectKind::DroppedColumn,
            "readded_column" => ObjectKind::ReaddedColumn,
            _ => return None,
        })
    }

    fn statement(self) -> &'static str {
        match self {
            ObjectKind::Keyspace => "CREATE KEYSPACE",
            ObjectKind::Type => "CREATE TYPE",
            ObjectKind::Table => "CREATE TABLE",
            ObjectKind::Index => "CREATE INDEX",
            ObjectKind::View => "CREATE MATERIALIZED VIEW",
            ObjectKind::Function => "CREATE FUNCTION",
            ObjectKind::Aggregate => "CREATE AGGREGATE",
            ObjectKind::DroppedColumn => "ALTER TABLE … DROP",
            ObjectKind::ReaddedColumn => "ALTER TABLE … ADD",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the head of a schema statement says it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatement {
    pub kind: ObjectKind,
    /// The keyspace (for an index, its table's).
    pub keyspace: String,
    /// The object's name; for a dropped or re-added column, the table's.
    pub name: String,
    pub if_not_exists: bool,
    /// The table an index or a view is on.
    pub on_table: Option<String>,
    /// The column of a dropped or re-added column.
    pub column: Option<String>,
    /// `ID = <uuid>` of a table or view, as 32 lowercase hex digits.
    pub id: Option<String>,
    /// Byte offset where `IF NOT EXISTS ` goes in a CREATE that lacks it.
    insert_at: usize,
}

/// Up to four leading words of a statement, for messages (`DROP KEYSPACE`, `CREATE ROLE`).
pub fn statement_kind(tokens: &[Token<'_>]) -> String {
    const WORDS: &[&str] = &[
        "keyspace",
        "schema",
        "table",
        "columnfamily",
        "type",
        "index",
        "custom",
        "materialized",
        "view",
        "function",
        "aggregate",
        "or",
        "replace",
        "role",
        "user",
        "trigger",
        "into",
        "from",
        "all",
        "permissions",
        "identity",
    ];
    let mut words: Vec<String> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if t.kind != TokenKind::Word || words.len() >= 4 {
            break;
        }
        if i > 0 && !WORDS.iter().any(|w| t.is_kw(w)) {
            break;
        }
        words.push(t.text.to_ascii_uppercase());
    }
    if words.is_empty() {
        tokens
            .first()
            .map_or_else(|| "(empty)".to_string(), |t| format!("{:?}", t.text))
    } else {
        words.join(" ")
    }
}

/// A cursor over one statement's tokens.
struct Cursor<'t, 'a> {
    t: &'t [Token<'a>],
    i: usize,
    kind: String,
}

impl<'a> Cursor<'_, 'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.t.get(self.i)
    }
    fn kw(&mut self, kw: &str) -> bool {
        if self.peek().is_some_and(|t| t.is_kw(kw)) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn bad(&self, reason: impl Into<String>) -> CqlError {
        CqlError::Invalid {
            kind: self.kind.clone(),
            reason: reason.into(),
        }
    }
    fn expect_kw(&mut self, kw: &str) -> Result<(), CqlError> {
        if self.kw(kw) {
            Ok(())
        } else {
            Err(self.bad(format!("expected {kw} {}", self.here())))
        }
    }
    fn here(&self) -> String {
        match self.peek() {
            Some(t) => format!("at {:?}", t.text),
            None => "at the end".to_string(),
        }
    }
    fn if_not_exists(&mut self) -> Result<bool, CqlError> {
        if self.kw("if") {
            self.expect_kw("not")?;
            self.expect_kw("exists")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }
    fn ident(&mut self, what: &str) -> Result<String, CqlError> {
        match self.peek().and_then(Token::ident) {
            Some(v) => {
                self.i += 1;
                Ok(v)
            }
            None => Err(self.bad(format!("expected {what} {}", self.here()))),
        }
    }
    /// `ks.name` (the keyspace is required: the worker's session has no current keyspace).
    fn qualified(&mut self, what: &str) -> Result<(String, String), CqlError> {
        let first = self.ident(what)?;
        if self.peek().is_some_and(|t| t.is_sym('.')) {
            self.i += 1;
            let second = self.ident(what)?;
            Ok((first, second))
        } else {
            Err(self.bad(format!("{what} {first:?} is not keyspace-qualified")))
        }
    }
}

/// Parses the head of one schema statement. The text must hold exactly one statement (a
/// trailing `;` is allowed, comments anywhere).
pub fn parse_schema_statement(text: &str) -> Result<SchemaStatement, CqlError> {
    let all = tokenize(text)?;
    let semis = all.iter().filter(|t| t.is_sym(';')).count();
    let trailing = all.last().is_some_and(|t| t.is_sym(';'));
    let tokens = if trailing {
        &all[..all.len() - 1]
    } else {
        &all[..]
    };
    if tokens.is_empty() {
        return Err(CqlError::Empty);
    }
    if semis > usize::from(trailing) {
        let count = split_statements(text).map_or(semis + 1, |s| s.len());
        return Err(CqlError::Several {
            count: count.max(2),
        });
    }
    let kind_text = statement_kind(tokens);
    check_brackets(tokens).map_err(|reason| CqlError::Invalid {
        kind: kind_text.clone(),
        reason,
    })?;
    let mut c = Cursor {
        t: tokens,
        i: 0,
        kind: kind_text.clone(),
    };
    let not_allowed = || CqlError::NotAllowed {
        kind: kind_text.clone(),
    };
    let st = if c.kw("create") {
        if c.peek().is_some_and(|t| t.is_kw("or")) {
            return Err(not_allowed());
        }
        if c.kw("keyspace") {
            let ine = c.if_not_exists()?;
            let insert_at = c.peek().map_or(0, |t| t.start);
            let name = c.ident("keyspace name")?;
            if c.peek().is_some_and(|t| t.is_sym('.')) {
                return Err(c.bad("a keyspace name cannot be qualified"));
            }
            SchemaStatement {
                kind: ObjectKind::Keyspace,
                keyspace: name.clone(),
                name,
                if_not_exists: ine,
                on_table: None,
                column: None,
                id: None,
                insert_at,
            }
        } else if c.kw("type") || c.kw("table") || c.kw("function") || c.kw("aggregate") {
            let kind = match c.t[c.i - 1].text.to_ascii_lowercase().as_str() {
                "type" => ObjectKind::Type,
                "table" => ObjectKind::Table,
                "function" => ObjectKind::Function,
                _ => ObjectKind::Aggregate,
            };
            let ine = c.if_not_exists()?;
            let insert_at = c.peek().map_or(0, |t| t.start);
            let (keyspace, name) = c.qualified(kind.as_str())?;
            if !c.peek().is_some_and(|t| t.is_sym('(')) {
                return Err(c.bad(format!("expected ( after the name {}", c.here())));
            }
            let id = if kind == ObjectKind::Table {
                top_level_id(&c, tokens)?
            } else {
                None
            };
            SchemaStatement {
                kind,
                keyspace,
                name,
                if_not_exists: ine,
                on_table: None,
                column: None,
                id,
                insert_at,
            }
        } else if c.kw("custom") || c.peek().is_some_and(|t| t.is_kw("index")) {
            c.expect_kw("index")?;
            let ine = c.if_not_exists()?;
            let insert_at = c.peek().map_or(0, |t| t.start);
            if c.peek().is_some_and(|t| t.is_kw("on")) {
                return Err(c.bad("the index has no name"));
            }
            let name = c.ident("index name")?;
            c.expect_kw("on")?;
            let (keyspace, table) = c.qualified("table")?;
            if !c.peek().is_some_and(|t| t.is_sym('(')) {
                return Err(c.bad(format!("expected ( after the table {}", c.here())));
            }
            SchemaStatement {
                kind: ObjectKind::Index,
                keyspace,
                name,
                if_not_exists: ine,
                on_table: Some(table),
                column: None,
                id: None,
                insert_at,
            }
        } else if c.kw("materialized") {
            c.expect_kw("view")?;
            let ine = c.if_not_exists()?;
            let insert_at = c.peek().map_or(0, |t| t.start);
            let (keyspace, name) = c.qualified("view")?;
            c.expect_kw("as")?;
            c.expect_kw("select")?;
            // FROM of the SELECT, outside any parentheses (function calls in the selection).
            let mut depth = 0i32;
            while let Some(t) = c.peek() {
                match t.kind {
                    TokenKind::Symbol('(') => depth += 1,
                    TokenKind::Symbol(')') => depth -= 1,
                    _ if depth == 0 && t.is_kw("from") => break,
                    _ => {}
                }
                c.i += 1;
            }
            c.expect_kw("from")?;
            let (base_ks, base) = c.qualified("base table")?;
            if base_ks != keyspace {
                return Err(c.bad(format!(
                    "the view is in keyspace {keyspace:?} but its base table in {base_ks:?}"
                )));
            }
            let id = top_level_id(&c, tokens)?;
            SchemaStatement {
                kind: ObjectKind::View,
                keyspace,
                name,
                if_not_exists: ine,
                on_table: Some(base),
                column: None,
                id,
                insert_at,
            }
        } else {
            return Err(not_allowed());
        }
    } else if c.kw("alter") {
        if !c.kw("table") {
            return Err(not_allowed());
        }
        let (keyspace, table) = c.qualified("table")?;
        if c.kw("drop") {
            let column = c.ident("column name")?;
            c.expect_kw("using")?;
            c.expect_kw("timestamp")?;
            match c.peek() {
                Some(t)
                    if t.kind == TokenKind::Word && t.text.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    c.i += 1
                }
                _ => return Err(c.bad(format!("expected a timestamp {}", c.here()))),
            }
            if c.peek().is_some() {
                return Err(c.bad(format!("unexpected text {}", c.here())));
            }
            SchemaStatement {
                kind: ObjectKind::DroppedColumn,
                keyspace,
                name: table,
                if_not_exists: false,
                on_table: None,
                column: Some(column),
                id: None,
                insert_at: 0,
            }
        } else if c.kw("add") {
            let column = c.ident("column name")?;
            // The column's type: words, quoted names (UDTs), `<`, `>`, `,`, `.`; nothing else.
            let ty = &tokens[c.i..];
            if ty.is_empty()
                || ty.iter().any(|t| {
                    !matches!(
                        t.kind,
                        TokenKind::Word
                            | TokenKind::QuotedName
                            | TokenKind::Symbol('<' | '>' | ',' | '.')
                    )
                })
            {
                return Err(c.bad("expected the column's type and nothing else"));
            }
            SchemaStatement {
                kind: ObjectKind::ReaddedColumn,
                keyspace,
                name: table,
                if_not_exists: false,
                on_table: None,
                column: Some(column),
                id: None,
                insert_at: 0,
            }
        } else {
            return Err(not_allowed());
        }
    } else {
        return Err(not_allowed());
    };
    Ok(st)
}

/// Brackets `()`, `{}`, `[]` (and nothing else) must pair up.
fn check_brackets(tokens: &[Token<'_>]) -> Result<(), String> {
    let mut open: Vec<char> = Vec::new();
    for t in tokens {
        match t.kind {
            TokenKind::Symbol(c @ ('(' | '{' | '[')) => open.push(c),
            TokenKind::Symbol(c @ (')' | '}' | ']')) => {
                let want = match c {
                    ')' => '(',
                    '}' => '{',
                    _ => '[',
                };
                if open.pop() != Some(want) {
                    return Err(format!("unbalanced {c:?}"));
                }
            }
            _ => {}
        }
    }
    match open.last() {
        Some(c) => Err(format!("unclosed {c:?}")),
        None => Ok(()),
    }
}

/// `ID = <uuid>` among the statement's `WITH` options (outside any brackets).
fn top_level_id(c: &Cursor<'_, '_>, tokens: &[Token<'_>]) -> Result<Option<String>, CqlError> {
    let mut depth = 0i32;
    let mut found = None;
    for (j, t) in tokens.iter().enumerate().skip(c.i) {
        match t.kind {
            TokenKind::Symbol('(' | '{' | '[') => depth += 1,
            TokenKind::Symbol(')' | '}' | ']') => depth -= 1,
            _ if depth == 0
                && t.is_kw("id")
                && j > 0
                && (tokens[j - 1].is_kw("with") || tokens[j - 1].is_kw("and"))
                && tokens.get(j + 1).is_some_and(|x| x.is_sym('=')) =>
            {
                let v = tokens
                    .get(j + 2)
                    .filter(|x| x.kind == TokenKind::Uuid)
                    .ok_or_else(|| c.bad("ID is not a UUID"))?;
                if found.is_some() {
                    return Err(c.bad("ID given twice"));
                }
                found = Some(v.text.replace('-', "").to_ascii_lowercase());
            }
            _ => {}
        }
    }
    Ok(found)
}

impl SchemaStatement {
    /// The statement with `IF NOT EXISTS` added to a CREATE that lacks it (ALTERs unchanged).
    pub fn with_if_not_exists(&self, text: &str) -> String {
        let create = !matches!(
            self.kind,
            ObjectKind::DroppedColumn | ObjectKind::ReaddedColumn
        );
        match text.get(..self.insert_at) {
            Some(head) if create && !self.if_not_exists => {
                format!("{head}IF NOT EXISTS {}", &text[self.insert_at..])
            }
            _ => text.to_string(),
        }
    }
}

/// A schema object a request asks to create, as the worker receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRequest<'a> {
    pub kind: ObjectKind,
    pub keyspace: &'a str,
    /// The object's name; for a dropped or re-added column, the table's.
    pub name: &'a str,
    /// The table of an index or view; empty otherwise.
    pub table: &'a str,
    /// The column of a dropped or re-added column; empty otherwise.
    pub column: &'a str,
    /// The id a table or view must be created with (32 hex digits, dashes optional); empty for none.
    pub table_id: &'a str,
    pub statement: &'a str,
}

/// Checks that `req.statement` is exactly one statement creating exactly the object `req` names
/// (kind, keyspace, name, table, column, id), `IF NOT EXISTS` for every CREATE, outside
/// Cassandra's own keyspaces.
pub fn validate_object(req: &ObjectRequest<'_>) -> Result<SchemaStatement, CqlError> {
    let st = parse_schema_statement(req.statement)?;
    let bad = |reason: String| CqlError::Invalid {
        kind: st.kind.statement().to_string(),
        reason,
    };
    if CASSANDRA_KEYSPACES.contains(&st.keyspace.as_str()) {
        return Err(CqlError::SystemKeyspace {
            kind: st.kind.statement().to_string(),
            keyspace: st.keyspace.clone(),
        });
    }
    if st.kind != req.kind {
        return Err(bad(format!("the request is for a {}", req.kind)));
    }
    if st.keyspace != req.keyspace {
        return Err(bad(format!(
            "the statement is in keyspace {:?}, the request names {:?}",
            st.keyspace, req.keyspace
        )));
    }
    if st.name != req.name {
        return Err(bad(format!(
            "the statement names {:?}, the request {:?}",
            st.name, req.name
        )));
    }
    let table = st.on_table.as_deref().unwrap_or_default();
    if table != req.table {
        return Err(bad(format!(
            "the statement is on table {table:?}, the request names {:?}",
            req.table
        )));
    }
    let column = st.column.as_deref().unwrap_or_default();
    if column != req.column {
        return Err(bad(format!(
            "the statement names column {column:?}, the request {:?}",
            req.column
        )));
    }
    let want_id = req.table_id.replace('-', "").to_ascii_lowercase();
    let id = st.id.as_deref().unwrap_or_default();
    if id != want_id {
        return Err(bad(format!(
            "the statement has ID {id:?}, the request {want_id:?}"
        )));
    }
    let create = !matches!(
        st.kind,
        ObjectKind::DroppedColumn | ObjectKind::ReaddedColumn
    );
    if create && !st.if_not_exists {
        return Err(bad("IF NOT EXISTS is required".into()));
    }
    Ok(st)
}

/// A statement reduced to its tokens for comparison: layout, comments and the `ID = <uuid>`
/// option (with its `AND`) removed; unquoted words compare case-insensitively.
#[derive(Debug, Clone)]
pub struct Canonical(Vec<CanonicalToken>);

#[derive(Debug, Clone)]
struct CanonicalToken {
    kind: TokenKind,
    /// What equality compares: the text, lowercased for unquoted words.
    key: String,
    /// The text as written, for display.
    text: String,
}

impl PartialEq for Canonical {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.kind == b.kind && a.key == b.key)
    }
}
impl Eq for Canonical {}

impl Canonical {
    /// The first statement of `text`, canonical.
    pub fn of(text: &str) -> Result<Self, CqlError> {
        let tokens = tokenize(text)?;
        let end = tokens
            .iter()
            .position(|t| t.is_sym(';'))
            .unwrap_or(tokens.len());
        let t = &tokens[..end];
        let mut out: Vec<CanonicalToken> = Vec::new();
        let mut j = 0;
        while j < t.len() {
            let id_opt = t[j].is_kw("id")
                && t.get(j + 1).is_some_and(|x| x.is_sym('='))
                && t.get(j + 2).is_some_and(|x| x.kind == TokenKind::Uuid)
                && j > 0
                && (t[j - 1].is_kw("with") || t[j - 1].is_kw("and"));
            if id_opt {
                j += 3;
                // `WITH ID = x AND a = b` -> `WITH a = b`; `... AND ID = x` -> drop the AND.
                if t[j - 4].is_kw("and") {
                    out.pop();
                } else if t.get(j).is_some_and(|x| x.is_kw("and")) {
                    j += 1;
                } else {
                    out.pop();
                }
                continue;
            }
            let key = match t[j].kind {
                TokenKind::Word => t[j].text.to_ascii_lowercase(),
                _ => t[j].text.to_string(),
            };
            out.push(CanonicalToken {
                kind: t[j].kind,
                key,
                text: t[j].text.to_string(),
            });
            j += 1;
        }
        Ok(Self(out))
    }

    /// One line of text: tokens separated by single spaces, none inside brackets or before
    /// commas and dots.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut prev: Option<TokenKind> = None;
        for t in &self.0 {
            let k = t.kind;
            let glue = matches!(prev, None | Some(TokenKind::Symbol('(' | '<' | '.' | '[')))
                || matches!(k, TokenKind::Symbol(')' | '>' | ',' | '.' | ']'))
                || (matches!(k, TokenKind::Symbol('(' | '<'))
                    && matches!(prev, Some(TokenKind::Word | TokenKind::QuotedName)));
            if !glue {
                s.push(' ');
            }
            s.push_str(&t.text);
            prev = Some(k);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitter_keeps_semicolons_inside_literals_names_comments_and_bodies() {
        let script = "CREATE TABLE ks.t (id int PRIMARY KEY, \"we;ird\" text) WITH comment = 'a;\nb' AND x = 'it''s;\n';\n\
             -- a comment; with a semicolon\n\
             // another; one\n\
             /* block;\n comment */\n\
             CREATE FUNCTION ks.f(a int) CALLED ON NULL INPUT RETURNS int LANGUAGE java AS $$ return a; $$;\n\
             ALTER TABLE ks.t DROP old USING TIMESTAMP 5\n";
        let st = split_statements(script).expect("split");
        assert_eq!(st.len(), 3, "{st:#?}");
        assert!(st[0].ends_with("'it''s;\n';"), "{}", st[0]);
        assert!(st[0].contains("'a;\nb'"));
        assert!(st[1].starts_with("CREATE FUNCTION") && st[1].contains("return a; $$;"));
        assert_eq!(st[2], "ALTER TABLE ks.t DROP old USING TIMESTAMP 5;");
    }

    #[test]
    fn printed_names_match_raw_or_quoted() {
        assert!(names_match("ks", "ks"));
        assert!(names_match("\"MyKs\"", "MyKs"));
        assert!(names_match("\"a\"\"b\"", "a\"b"));
        assert!(!names_match("MyKs", "myks"));
        assert!(!names_match("\"ks\".x", "ks"));
    }

    #[test]
    fn splitter_drops_empty_statements_and_comment_only_text() {
        assert_eq!(
            split_statements("  ;; -- nothing\n/* x */ ;").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(split_statements("").unwrap(), Vec::<String>::new());
        assert_eq!(
            split_statements("a; ;b").unwrap(),
            vec!["a;".to_string(), "b;".to_string()]
        );
    }

    #[test]
    fn unterminated_constructs_are_errors_not_guesses() {
        for bad in [
            "CREATE TABLE ks.t (a int) WITH comment = 'abc",
            "CREATE TABLE ks.\"t (a int)",
            "SELECT 1 /* never closed",
            "CREATE FUNCTION ks.f() AS $$ body",
            "'it''",
        ] {
            assert!(
                matches!(tokenize(bad), Err(CqlError::Syntax(_))),
                "{bad:?} tokenized"
            );
        }
    }

    #[test]
    fn non_ascii_text_is_handled_on_character_boundaries() {
        let st = "CREATE TABLE ks.t (id int PRIMARY KEY, \"größe_名前\" text) WITH comment = 'ünïcødé; ✓' AND ID = 0190d0c4-7f5e-7000-8000-000000000001;";
        let parts = split_statements(st).unwrap();
        assert_eq!(parts.len(), 1);
        let c = Canonical::of(st).unwrap();
        assert!(c.render().contains("\"größe_名前\" text"), "{}", c.render());
        assert!(!c.render().contains("0190d0c4"));
        // Stray non-ASCII outside quotes is a token, not a panic.
        let t = tokenize("é ü;").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].kind, TokenKind::Symbol('é'));
        assert!(tokenize("'é").is_err());
        assert!(position("é\nü", 4).starts_with("line 2"));
    }

    #[test]
    fn canonical_form_ignores_layout_comments_and_id_but_not_literals() {
        let a = Canonical::of("CREATE TABLE ks.t (\n    id bigint PRIMARY KEY,\n    v text\n) WITH ID = 0190d0c4-7f5e-7000-8000-000000000001\n    AND comment = 'x';").unwrap();
        let b = Canonical::of("create table ks.t (id bigint primary key, /* c */ v text) with comment = 'x' AND ID = 11111111-7f5e-7000-8000-000000000001").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.render(),
            "CREATE TABLE ks.t(id bigint PRIMARY KEY, v text) WITH comment = 'x'"
        );
        let c =
            Canonical::of("CREATE TABLE ks.t (id bigint PRIMARY KEY, v text) WITH comment = 'X'")
                .unwrap();
        assert_ne!(a, c);
        // Text that renders alike but differs inside a literal stays different.
        let d = Canonical::of("CREATE TABLE ks.t (a int) WITH comment = 'a ( b'").unwrap();
        let e = Canonical::of("CREATE TABLE ks.t (a int) WITH comment = 'a (b'").unwrap();
        assert_ne!(d, e);
        let only = Canonical::of(
            "CREATE TABLE ks.t (a int) WITH ID = 0190d0c4-7f5e-7000-8000-000000000001",
        )
        .unwrap();
        assert_eq!(only.render(), "CREATE TABLE ks.t(a int)");
    }

    fn req<'a>(
        kind: ObjectKind,
        ks: &'a str,
        name: &'a str,
        statement: &'a str,
    ) -> ObjectRequest<'a> {
        ObjectRequest {
            kind,
            keyspace: ks,
            name,
            table: "",
            column: "",
            table_id: "",
            statement,
        }
    }

    #[test]
    fn parses_every_kind_describe_emits() {
        let p = |s: &str| parse_schema_statement(s).unwrap();
        let k = p(
            "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': '3'} AND durable_writes = true;",
        );
        assert_eq!(
            (k.kind, k.keyspace.as_str(), k.if_not_exists),
            (ObjectKind::Keyspace, "ks", false)
        );
        let t = p("CREATE TYPE ks.\"Addr\" (street text);");
        assert_eq!((t.kind, t.name.as_str()), (ObjectKind::Type, "Addr"));
        let t = p(
            "CREATE TABLE IF NOT EXISTS KS.T (id int PRIMARY KEY) WITH ID = 0190D0C4-7f5e-7000-8000-000000000001 AND comment = ''",
        );
        assert_eq!(
            (t.keyspace.as_str(), t.name.as_str(), t.if_not_exists),
            ("ks", "t", true)
        );
        assert_eq!(t.id.as_deref(), Some("0190d0c47f5e70008000000000000001"));
        let i = p("CREATE CUSTOM INDEX t_v ON ks.t (v) USING 'StorageAttachedIndex';");
        assert_eq!(
            (i.kind, i.name.as_str(), i.on_table.as_deref()),
            (ObjectKind::Index, "t_v", Some("t"))
        );
        let v = p(
            "CREATE MATERIALIZED VIEW ks.by_v AS\n    SELECT * FROM ks.t\n    WHERE v IS NOT NULL AND id IS NOT NULL\n    PRIMARY KEY (v, id)\n WITH ID = 0190d0c4-7f5e-7000-8000-000000000009 AND comment = 'from; x';",
        );
        assert_eq!(
            (v.kind, v.name.as_str(), v.on_table.as_deref()),
            (ObjectKind::View, "by_v", Some("t"))
        );
        assert_eq!(v.id.as_deref(), Some("0190d0c47f5e70008000000000000009"));
        let f = p(
            "CREATE FUNCTION ks.f(a int)\n    CALLED ON NULL INPUT\n    RETURNS int\n    LANGUAGE java\n    AS $$return a; /* ; */$$;",
        );
        assert_eq!((f.kind, f.name.as_str()), (ObjectKind::Function, "f"));
        let a = p("CREATE AGGREGATE ks.total(int)\n    SFUNC f\n    STYPE int\n    INITCOND 0;");
        assert_eq!((a.kind, a.name.as_str()), (ObjectKind::Aggregate, "total"));
        let d = p("ALTER TABLE ks.t DROP \"Old\" USING TIMESTAMP 1700000000000000;");
        assert_eq!(
            (d.kind, d.name.as_str(), d.column.as_deref()),
            (ObjectKind::DroppedColumn, "t", Some("Old"))
        );
        let r = p("ALTER TABLE ks.t ADD old frozen<map<text, ks.addr>>;");
        assert_eq!(
            (r.kind, r.column.as_deref()),
            (ObjectKind::ReaddedColumn, Some("old"))
        );
    }

    #[test]
    fn if_not_exists_is_inserted_before_the_name() {
        for (src, want) in [
            (
                "CREATE KEYSPACE ks WITH x = 1;",
                "CREATE KEYSPACE IF NOT EXISTS ks WITH x = 1;",
            ),
            (
                "CREATE TABLE ks.t (a int);",
                "CREATE TABLE IF NOT EXISTS ks.t (a int);",
            ),
            (
                "CREATE CUSTOM INDEX i ON ks.t (a);",
                "CREATE CUSTOM INDEX IF NOT EXISTS i ON ks.t (a);",
            ),
            (
                "CREATE MATERIALIZED VIEW ks.v AS SELECT a FROM ks.t WHERE a IS NOT NULL PRIMARY KEY (a);",
                "CREATE MATERIALIZED VIEW IF NOT EXISTS ks.v AS SELECT a FROM ks.t WHERE a IS NOT NULL PRIMARY KEY (a);",
            ),
            (
                "CREATE TYPE IF NOT EXISTS ks.x (a int);",
                "CREATE TYPE IF NOT EXISTS ks.x (a int);",
            ),
            (
                "ALTER TABLE ks.t DROP a USING TIMESTAMP 1;",
                "ALTER TABLE ks.t DROP a USING TIMESTAMP 1;",
            ),
        ] {
            let st = parse_schema_statement(src).unwrap();
            let out = st.with_if_not_exists(src);
            assert_eq!(out, want);
            assert!(parse_schema_statement(&out).unwrap().if_not_exists || st.column.is_some());
        }
    }

    #[test]
    fn only_schema_creation_is_allowed_and_refusals_name_the_statement_kind() {
        for (bad, kind) in [
            ("DROP KEYSPACE k", "DROP KEYSPACE"),
            ("drop table ks.t;", "DROP TABLE"),
            (
                "CREATE ROLE r WITH SUPERUSER = true AND LOGIN = true",
                "CREATE ROLE",
            ),
            ("CREATE USER u WITH PASSWORD 'p' SUPERUSER", "CREATE USER"),
            (
                "GRANT ALL PERMISSIONS ON ALL KEYSPACES TO r",
                "GRANT ALL PERMISSIONS",
            ),
            (
                "ALTER KEYSPACE ks WITH replication = {'class': 'SimpleStrategy'}",
                "ALTER KEYSPACE",
            ),
            ("ALTER ROLE cassandra WITH PASSWORD = 'x'", "ALTER ROLE"),
            ("ALTER TABLE ks.t WITH gc_grace_seconds = 0", "ALTER TABLE"),
            ("ALTER TABLE ks.t RENAME a TO b", "ALTER TABLE"),
            ("INSERT INTO ks.t (a) VALUES (1)", "INSERT INTO"),
            ("TRUNCATE ks.t", "TRUNCATE"),
            (
                "CREATE OR REPLACE FUNCTION ks.f(a int) RETURNS NULL ON NULL INPUT RETURNS int LANGUAGE java AS 'return a;'",
                "CREATE OR REPLACE FUNCTION",
            ),
            (
                "CREATE TRIGGER tr ON ks.t USING 'org.Evil'",
                "CREATE TRIGGER",
            ),
            (
                "/* CREATE TABLE ks.t (a int) */ DROP KEYSPACE ks",
                "DROP KEYSPACE",
            ),
            ("\"CREATE\" TABLE ks.t (a int)", "\"\\\"CREATE\\\"\""),
        ] {
            let e = parse_schema_statement(bad).expect_err(bad);
            assert!(e.is_forbidden(), "{bad}: {e}");
            assert!(e.to_string().contains(kind), "{bad}: {e}");
        }
    }

    #[test]
    fn one_statement_per_object_only_a_trailing_semicolon() {
        let two = "CREATE TABLE IF NOT EXISTS ks.t (a int PRIMARY KEY); DROP KEYSPACE ks";
        assert_eq!(
            parse_schema_statement(two),
            Err(CqlError::Several { count: 2 })
        );
        let hidden = "CREATE TABLE IF NOT EXISTS ks.t (a int PRIMARY KEY) WITH comment = 'x';;";
        assert!(matches!(
            parse_schema_statement(hidden),
            Err(CqlError::Several { .. })
        ));
        // Semicolons inside a literal, a quoted name, a comment or a body are not separators.
        let ok = "CREATE TABLE IF NOT EXISTS ks.t (a int PRIMARY KEY, \"b;\" int) WITH comment = 'x; DROP KEYSPACE ks' -- ; tail\n;";
        assert!(parse_schema_statement(ok).is_ok());
        assert_eq!(
            parse_schema_statement(" -- only a comment\n;"),
            Err(CqlError::Empty)
        );
    }

    #[test]
    fn validation_checks_kind_names_id_and_if_not_exists() {
        let st = "CREATE TABLE IF NOT EXISTS ks.t (a int PRIMARY KEY) WITH ID = 0190d0c4-7f5e-7000-8000-000000000001";
        let mut r = req(ObjectKind::Table, "ks", "t", st);
        r.table_id = "0190d0c4-7f5e-7000-8000-000000000001";
        assert!(validate_object(&r).is_ok());
        let mut other = r.clone();
        other.name = "u";
        assert!(
            validate_object(&other)
                .unwrap_err()
                .to_string()
                .contains("\"t\"")
        );
        let mut other = r.clone();
        other.keyspace = "ks2";
        assert!(validate_object(&other).is_err());
        let mut other = r.clone();
        other.table_id = "0190d0c4-7f5e-7000-8000-000000000002";
        assert!(
            validate_object(&other)
                .unwrap_err()
                .to_string()
                .contains("ID")
        );
        let mut other = r.clone();
        other.kind = ObjectKind::Type;
        assert!(validate_object(&other).is_err());
        // Case rules: an unquoted name is lowercase; a quoted one keeps its case.
        let upper = "CREATE TABLE IF NOT EXISTS ks.\"T\" (a int PRIMARY KEY)";
        assert!(validate_object(&req(ObjectKind::Table, "ks", "T", upper)).is_ok());
        assert!(validate_object(&req(ObjectKind::Table, "ks", "t", upper)).is_err());
        let unquoted = "CREATE TABLE IF NOT EXISTS KS.T (a int PRIMARY KEY)";
        assert!(validate_object(&req(ObjectKind::Table, "ks", "t", unquoted)).is_ok());
        assert!(validate_object(&req(ObjectKind::Table, "ks", "T", unquoted)).is_err());
        // A quoted name holding a dot is one name, not ks.table.
        let dotted = "CREATE TABLE IF NOT EXISTS \"ks.t\" (a int PRIMARY KEY)";
        assert!(validate_object(&req(ObjectKind::Table, "ks", "t", dotted)).is_err());
        // Without IF NOT EXISTS.
        let plain = "CREATE TABLE ks.t (a int PRIMARY KEY)";
        assert!(
            validate_object(&req(ObjectKind::Table, "ks", "t", plain))
                .unwrap_err()
                .to_string()
                .contains("IF NOT EXISTS")
        );
        // Unqualified.
        let bare = "CREATE TABLE IF NOT EXISTS t (a int PRIMARY KEY)";
        assert!(validate_object(&req(ObjectKind::Table, "ks", "t", bare)).is_err());
        // Cassandra's keyspaces.
        let sys = "CREATE TABLE IF NOT EXISTS system_auth.t (a int PRIMARY KEY)";
        assert!(
            validate_object(&req(ObjectKind::Table, "system_auth", "t", sys))
                .unwrap_err()
                .is_forbidden()
        );
        // Index: its table must match too.
        let ix = "CREATE INDEX IF NOT EXISTS i ON ks.t (a)";
        let mut r = req(ObjectKind::Index, "ks", "i", ix);
        r.table = "t";
        assert!(validate_object(&r).is_ok());
        r.table = "u";
        assert!(validate_object(&r).is_err());
        // Dropped column: table and column.
        let d = "ALTER TABLE ks.t DROP c USING TIMESTAMP 12";
        let mut r = req(ObjectKind::DroppedColumn, "ks", "t", d);
        r.column = "c";
        assert!(validate_object(&r).is_ok());
        r.column = "x";
        assert!(validate_object(&r).is_err());
        for bad in [
            "ALTER TABLE ks.t DROP c",
            "ALTER TABLE ks.t DROP c USING TIMESTAMP 12 AND x",
            "ALTER TABLE ks.t DROP c USING TIMESTAMP 'x'",
            "ALTER TABLE ks.t ADD c int WITH x = 1",
            "ALTER TABLE ks.t ADD c",
        ] {
            assert!(parse_schema_statement(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn adversarial_heads_are_refused() {
        for bad in [
            "CREATE TABLE IF NOT EXISTS ks.t",
            "CREATE TABLE IF EXISTS ks.t (a int)",
            "CREATE TABLE IF NOT ks.t (a int)",
            "CREATE TABLE ks. (a int)",
            "CREATE TABLE ks.t.u (a int)",
            "CREATE KEYSPACE a.b WITH x = 1",
            "CREATE INDEX ON ks.t (a)",
            "CREATE MATERIALIZED VIEW ks.v AS SELECT * FROM other.t WHERE a IS NOT NULL PRIMARY KEY (a)",
            "CREATE TABLE ks.t (a int) WITH ID = 12 ",
            "CREATE TABLE ks.t (a int) WITH ID = 0190d0c4-7f5e-7000-8000-000000000001 AND ID = 0190d0c4-7f5e-7000-8000-000000000002",
            "CREATE",
            "",
            ";",
            "CREATE TABLE IF NOT EXISTS ks.t (a int PRIMARY KEY",
            "CREATE TABLE IF NOT EXISTS ks.t (a int PRIMARY KEY))",
            "CREATE TABLE IF NOT EXISTS ks.t (a map<int, int}) ",
        ] {
            assert!(parse_schema_statement(bad).is_err(), "{bad:?} accepted");
        }
    }
}
