//! Compiles the JMX session helper (`java/RingvaultJmx.java`) with the JDK's `javac` when one is
//! found, so the worker carries the class and needs only a JRE where it runs. Without a `javac`
//! the worker is built with an empty class and runs nodetool for every call (slower, same result);
//! the build says so in a warning.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = PathBuf::from("java/RingvaultJmx.java");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=JAVA_HOME");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let class = out.join("RingvaultJmx.class");
    let javac = std::env::var_os("JAVA_HOME")
        .map(|h| PathBuf::from(h).join("bin/javac"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("javac"));
    // --release 11: the class loads on any JVM Cassandra 4.0 or later runs on.
    let status = Command::new(&javac)
        .args(["--release", "11", "-nowarn", "-d"])
        .arg(&out)
        .arg(&src)
        .status();
    match status {
        Ok(s) if s.success() && class.is_file() => {}
        other => {
            println!(
                "cargo:warning=no JMX session helper in this build ({} gave {other:?}): the worker will start a nodetool JVM for every snapshot and clearsnapshot",
                javac.display()
            );
            std::fs::write(&class, b"").expect("writing an empty helper class into OUT_DIR");
        }
    }
}
