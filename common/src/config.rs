//! Configuration files for the services (`--config FILE`, TOML). Exists so that every flag of
//! the coordinator and the worker can be set in a file, by environment or on the command line
//! without each flag being wired three times: the loader reads the clap [`Command`] itself, so
//! flags added later are covered automatically.
//!
//! Keys are the flags' long names, kebab-case as on the command line (`snapshot-ttl-secs = 60`).
//! Precedence: command-line flags, then environment variables, then the file, then the built-in
//! defaults. A flag without an explicit `env` gets `<PREFIX><FLAG_IN_UPPER_SNAKE_CASE>`. An
//! unknown key, a key given a value of the wrong shape, or a value the flag would refuse makes
//! the whole file refused, naming the key; nothing starts with a half-read configuration.
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line or environment itself is wrong (also `--help` and `--version`, which
    /// clap reports as errors to print and exit with).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A key names no flag.
    #[error("config file {path}: unknown key `{key}`{hint}")]
    UnknownKey {
        path: PathBuf,
        key: String,
        hint: String,
    },
    /// A key's value has the wrong shape or is refused by the flag.
    #[error("config file {path}: key `{key}`: {message}")]
    Value {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The name of the flag that names the file.
pub const CONFIG_FLAG: &str = "config";

/// Parses the process's command line for `T` with `--config`, exiting like clap does on
/// `--help`, `--version` and errors (status 2 for a refused configuration).
pub fn parse_or_exit<T: clap::Parser>(env_prefix: &str) -> T {
    match try_parse_from::<T, _, _>(std::env::args_os(), env_prefix) {
        Ok(t) => t,
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    }
}

/// The environment variable a flag without an explicit one is read from.
pub fn derived_env(env_prefix: &str, long: &str) -> String {
    format!(
        "{env_prefix}{}",
        long.to_ascii_uppercase().replace('-', "_")
    )
}

/// `T`'s command with the `--config` flag and an environment variable for every flag.
pub fn command<T: clap::CommandFactory>(env_prefix: &str) -> Command {
    let prefix = env_prefix.to_string();
    T::command()
        .arg(
            Arg::new(CONFIG_FLAG)
                .long(CONFIG_FLAG)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .env(derived_env(env_prefix, CONFIG_FLAG))
                .help(
                    "TOML file setting any of these flags (keys: the long flag names); \
                     flags and environment variables override it",
                ),
        )
        .mut_args(move |a| {
            if settable(&a) && a.get_env().is_none() {
                let env = derived_env(&prefix, a.get_long().unwrap_or_default());
                a.env(env)
            } else {
                a
            }
        })
}

/// Whether an argument is a flag a file may set.
fn settable(a: &Arg) -> bool {
    a.get_long().is_some()
        && a.get_id() != CONFIG_FLAG
        && !matches!(
            a.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        )
}

/// Parses `args` (the first is the program name) for `T`, reading the file `--config` names.
pub fn try_parse_from<T, I, S>(args: I, env_prefix: &str) -> Result<T, ConfigError>
where
    T: clap::Parser,
    I: IntoIterator<Item = S>,
    S: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = command::<T>(env_prefix);
    // First pass: only to learn the file's name (required flags may come from the file).
    let pre = cmd
        .clone()
        .mut_args(|a| a.required(false))
        .try_get_matches_from(args.iter().cloned())?;
    if let Some(path) = pre.get_one::<PathBuf>(CONFIG_FLAG) {
        let table = read(path)?;
        for (key, value) in apply(&cmd, path, &table)? {
            cmd = cmd.mut_arg(key, |a| a.default_values(value).required(false));
        }
    }
    let matches = cmd.try_get_matches_from(args)?;
    Ok(T::from_arg_matches(&matches)?)
}

fn read(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
}

/// The values the file gives, by argument id, each checked against its flag.
fn apply(
    cmd: &Command,
    path: &Path,
    table: &toml::Table,
) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let mut out = Vec::new();
    for (key, value) in table {
        let value_err = |message: String| ConfigError::Value {
            path: path.to_path_buf(),
            key: key.clone(),
            message,
        };
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| settable(a) && a.get_long() == Some(key.as_str()))
        else {
            let kebab = key.replace('_', "-");
            let hint = if key == CONFIG_FLAG {
                ": a config file cannot name another".to_string()
            } else if cmd
                .get_arguments()
                .any(|a| settable(a) && a.get_long() == Some(kebab.as_str()))
            {
                format!(" (keys are the flags' long names: `{kebab}`)")
            } else {
                format!(" (not a flag of {}; see --help)", cmd.get_name())
            };
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                hint,
            });
        };
        let is_switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let multiple = matches!(arg.get_action(), ArgAction::Append)
            || arg.get_num_args().is_some_and(|r| r.max_values() > 1);
        let values: Vec<String> = match value {
            toml::Value::Boolean(b) => vec![b.to_string()],
            _ if is_switch => {
                return Err(value_err(format!(
                    "a switch: true or false, not {}",
                    value.type_str()
                )));
            }
            toml::Value::Array(items) if multiple => items
                .iter()
                .map(|v| scalar(v).ok_or_else(|| value_err(shape(v))))
                .collect::<Result<_, _>>()?,
            toml::Value::Array(_) => {
                return Err(value_err("takes one value, not an array".into()));
            }
            v => vec![scalar(v).ok_or_else(|| value_err(shape(v)))?],
        };
        if !is_switch {
            for v in &values {
                check(cmd, arg, v).map_err(|m| value_err(format!("{v:?}: {m}")))?;
            }
        }
        out.push((arg.get_id().to_string(), values));
    }
    Ok(out)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn shape(v: &toml::Value) -> String {
    format!("expected a string, number or boolean, not {}", v.type_str())
}

/// Runs the flag's own value parser on one value, as the command line would.
fn check(cmd: &Command, arg: &Arg, value: &str) -> Result<(), String> {
    let probe = Command::new(cmd.get_name().to_string())
        .no_binary_name(true)
        .arg(
            Arg::new("value")
                .long("value")
                .action(ArgAction::Set)
                .allow_hyphen_values(true)
                .value_parser(arg.get_value_parser().clone()),
        );
    match probe.try_get_matches_from(["--value", value]) {
        Ok(_) => Ok(()),
        Err(e) => Err(match std::error::Error::source(&e) {
            Some(src) => src.to_string(),
            None => match e.kind() {
                clap::error::ErrorKind::InvalidValue => {
                    let allowed: Vec<String> = arg
                        .get_possible_values()
                        .iter()
                        .map(|p| p.get_name().to_string())
                        .collect();
                    format!("not one of {}", allowed.join(", "))
                }
                k => k.to_string(),
            },
        }),
    }
}

/// One settable key of a command, for documentation: the annotated examples and the README's
/// configuration reference.
#[derive(Debug, Clone)]
pub struct KeyDoc {
    /// The key (the long flag name).
    pub key: String,
    /// The environment variable.
    pub env: String,
    /// The built-in default(s), if any.
    pub default: Vec<String>,
    /// The flag's help text.
    pub help: String,
    /// Whether the key takes a list.
    pub multiple: bool,
    /// Whether the key is a switch (true/false).
    pub switch: bool,
}

/// Every key `cmd` (from [`command`]) accepts in a file.
pub fn keys(cmd: &Command) -> Vec<KeyDoc> {
    cmd.get_arguments()
        .filter(|a| settable(a))
        .map(|a| KeyDoc {
            key: a.get_long().unwrap_or_default().to_string(),
            env: a
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default(),
            default: a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect(),
            help: a
                .get_long_help()
                .or(a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default(),
            multiple: matches!(a.get_action(), ArgAction::Append),
            switch: matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse),
        })
        .collect()
}

/// An annotated TOML line block for one key: its help as comments, then the key commented out
/// with its default (or an example shape).
pub fn annotated(k: &KeyDoc) -> String {
    let mut s = String::new();
    for line in k.help.lines() {
        s.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
    }
    s.push_str(&format!("# (env {})\n", k.env));
    let value = if k.switch {
        "false".to_string()
    } else if k.multiple {
        let items: Vec<String> = k.default.iter().map(|d| toml_value(d)).collect();
        format!("[{}]", items.join(", "))
    } else {
        match k.default.first() {
            Some(d) => toml_value(d),
            None => "\"\"".to_string(),
        }
    };
    s.push_str(&format!("# {} = {value}\n", k.key));
    s
}

fn toml_value(d: &str) -> String {
    if d.parse::<i64>().is_ok() || d == "true" || d == "false" {
        d.to_string()
    } else {
        format!("\"{}\"", d.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Keys of `cmd` an example file does not mention (as `key =` or `# key =`).
pub fn missing_from_example(cmd: &Command, example: &str) -> Vec<KeyDoc> {
    keys(cmd)
        .into_iter()
        .filter(|k| {
            !example.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.strip_prefix(k.key.as_str())
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
        })
        .collect()
}

/// What each binary's `config_example` test checks of its annotated example configuration
/// (`deploy/config/<program>.toml`): it documents every flag of `T` (otherwise the error
/// lists the lines to paste) and is itself a valid configuration, loaded as `T`.
pub fn check_example<T: clap::Parser>(
    program: &str,
    env_prefix: &str,
    example: &Path,
) -> Result<T, String> {
    let shown = example.display();
    let text = std::fs::read_to_string(example).map_err(|e| format!("reading {shown}: {e}"))?;
    let missing: Vec<String> = missing_from_example(&command::<T>(env_prefix), &text)
        .iter()
        .map(annotated)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{shown} lacks these keys; add:\n\n{}",
            missing.join("\n")
        ));
    }
    let config = OsString::from(example);
    try_parse_from(
        [OsString::from(program), "--config".into(), config],
        env_prefix,
    )
    .map_err(|e| format!("{shown} does not load: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::Write;

    /// A stand-in with each kind of flag the services have.
    #[derive(Debug, Parser)]
    #[command(name = "svc", version)]
    struct Opts {
        /// Address.
        #[arg(long, default_value = "127.0.0.1:1", env = "RVCFGTEST_LISTEN_X")]
        listen: std::net::SocketAddr,
        /// A number without an explicit env.
        #[arg(long, default_value_t = 5)]
        count_secs: u64,
        /// Required, repeatable.
        #[arg(long = "data-dir", required = true)]
        data_dirs: Vec<PathBuf>,
        /// A switch.
        #[arg(long)]
        loud: bool,
        /// Optional.
        #[arg(long)]
        name: Option<String>,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn parse(args: &[&str]) -> Result<Opts, ConfigError> {
        try_parse_from::<Opts, _, _>(
            std::iter::once("svc").chain(args.iter().copied()),
            "RVCFGTEST_",
        )
    }

    #[test]
    fn file_sets_every_kind_of_flag_and_required_ones() {
        let f = file(
            "listen = \"127.0.0.1:9\"\ncount-secs = 7\ndata-dir = [\"/a\", \"/b\"]\nloud = true\nname = \"n\"\n",
        );
        let o = parse(&["--config", f.path().to_str().unwrap()]).unwrap();
        assert_eq!(o.listen.port(), 9);
        assert_eq!(o.count_secs, 7);
        assert_eq!(o.data_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(o.loud);
        assert_eq!(o.name.as_deref(), Some("n"));
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let f = file("count-secs = 7\ndata-dir = [\"/a\"]\n");
        let o = parse(&[
            "--config",
            f.path().to_str().unwrap(),
            "--count-secs",
            "8",
            "--data-dir",
            "/z",
        ])
        .unwrap();
        assert_eq!(o.count_secs, 8);
        assert_eq!(o.data_dirs, vec![PathBuf::from("/z")]);
        assert_eq!(o.listen.port(), 1);
        assert!(!o.loud);
    }

    /// Its own flags and variables: tests run in parallel in one process.
    #[derive(Debug, Parser)]
    #[command(name = "envsvc")]
    struct EnvOpts {
        #[arg(long, default_value = "127.0.0.1:1", env = "RVCFGENV_LISTEN_X")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        name: Option<String>,
    }

    #[test]
    fn environment_overrides_the_file_but_not_flags() {
        let parse = |args: &[&str]| {
            try_parse_from::<EnvOpts, _, _>(
                std::iter::once("envsvc").chain(args.iter().copied()),
                "RVCFGENV_",
            )
            .unwrap()
        };
        let f = file("listen = \"127.0.0.1:2\"\nname = \"from-file\"\n");
        let path = f.path().to_str().unwrap();
        assert_eq!(
            parse(&["--config", path]).listen.port(),
            2,
            "file beats default"
        );
        // SAFETY: only this test reads or writes RVCFGENV_* variables.
        unsafe {
            std::env::set_var("RVCFGENV_LISTEN_X", "127.0.0.1:3");
            std::env::set_var("RVCFGENV_NAME", "from-env");
        }
        let o = parse(&["--config", path]);
        assert_eq!(o.listen.port(), 3, "env beats file");
        assert_eq!(
            o.name.as_deref(),
            Some("from-env"),
            "derived env name beats file"
        );
        let o = parse(&["--config", path, "--name", "flag"]);
        assert_eq!(o.name.as_deref(), Some("flag"), "flag beats env");
        // SAFETY: as above.
        unsafe {
            std::env::remove_var("RVCFGENV_LISTEN_X");
            std::env::remove_var("RVCFGENV_NAME");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let f = file("data-dir = [\"/a\"]\nlisten-port = 3\n");
        let e = parse(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownKey { key, .. } if key == "listen-port"),
            "{e}"
        );
        assert!(e.to_string().contains("`listen-port`"), "{e}");
        let f = file("count_secs = 3\n");
        let e = parse(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(
            e.to_string().contains("`count-secs`"),
            "snake case gets a hint: {e}"
        );
        let f = file("config = \"x\"\n");
        assert!(matches!(
            parse(&["--config", f.path().to_str().unwrap()]).unwrap_err(),
            ConfigError::UnknownKey { .. }
        ));
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        for (text, key) in [
            ("count-secs = \"soon\"\n", "count-secs"),
            ("count-secs = -1\n", "count-secs"),
            ("listen = \"nowhere\"\n", "listen"),
            ("loud = \"yes\"\n", "loud"),
            ("name = [\"a\", \"b\"]\n", "name"),
            ("name = { a = 1 }\n", "name"),
        ] {
            let f = file(text);
            let e =
                parse(&["--config", f.path().to_str().unwrap(), "--data-dir", "/a"]).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Value { key: k, .. } if k == key),
                "{text}: {e}"
            );
        }
        let f = file("listen = \n");
        assert!(matches!(
            parse(&["--config", f.path().to_str().unwrap()]).unwrap_err(),
            ConfigError::Syntax { .. }
        ));
        assert!(matches!(
            parse(&["--config", "/nonexistent/ringvault.toml"]).unwrap_err(),
            ConfigError::Read { .. }
        ));
    }

    #[test]
    fn without_a_file_required_flags_stay_required() {
        assert!(matches!(parse(&[]).unwrap_err(), ConfigError::Clap(_)));
        assert_eq!(parse(&["--data-dir", "/a"]).unwrap().count_secs, 5);
    }

    #[test]
    fn documentation_lists_every_key_with_its_env() {
        let cmd = command::<Opts>("RVCFGTEST_");
        let keys = keys(&cmd);
        let names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(names, ["listen", "count-secs", "data-dir", "loud", "name"]);
        let count = keys.iter().find(|k| k.key == "count-secs").unwrap();
        assert_eq!(count.env, "RVCFGTEST_COUNT_SECS");
        assert!(annotated(count).contains("# count-secs = 5"));
        let example = "listen = \"127.0.0.1:1\"\n# count-secs = 5\n";
        let missing: Vec<String> = missing_from_example(&cmd, example)
            .into_iter()
            .map(|k| k.key)
            .collect();
        assert_eq!(missing, ["data-dir", "loud", "name"]);
    }
}
