//! File rules (regular files, sizes, byte order marks) and bounds on the work a
//! document may cost (nesting, alias and variable expansion).

use super::*;

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn an_included_fifo_is_refused_without_blocking() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [pipe.yaml]\n");
    mkfifo(&tree.path("pipe.yaml"));
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: not a regular file; config and .env files must be plain files (not a FIFO, device or socket)",
            tree.path("pipe.yaml").display()
        )
    );
}

#[test]
fn a_device_is_refused_as_include_and_env_file() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [/dev/zero]\n");
    assert_eq!(
        tree.error(&[]),
        "/dev/zero: not a regular file; config and .env files must be plain files (not a FIFO, device or socket)"
    );
    tree.write("config.yaml", "environment_vars:\n  include: [/dev/zero]\n");
    assert_eq!(
        tree.error(&[]),
        "/dev/zero: not a regular file; config and .env files must be plain files (not a FIFO, device or socket)"
    );
    tree.write("config.yaml", "environment_vars:\n  include: [.env]\n");
    mkfifo(&tree.path(".env"));
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: not a regular file; config and .env files must be plain files (not a FIFO, device or socket)",
            tree.path(".env").display()
        )
    );
}

#[test]
fn a_file_over_1_mib_is_refused() {
    let tree = TempTree::new();
    let limit = 1024 * 1024;
    let padded = |size: usize| format!("a: 1\n#{}\n", "x".repeat(size - 7));
    tree.write("config.yaml", "include: [big.yaml]\n");
    tree.write("big.yaml", &padded(limit));
    tree.load().unwrap();
    tree.write("big.yaml", &padded(limit + 1));
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: file is larger than 1 MiB, the limit for one config file",
            tree.path("big.yaml").display()
        )
    );
    tree.write("config.yaml", "environment_vars:\n  include: [big.env]\n");
    tree.write("big.env", &format!("A=1\n#{}\n", "x".repeat(limit)));
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: file is larger than 1 MiB, the limit for one config file",
            tree.path("big.env").display()
        )
    );
}

#[test]
fn the_files_of_a_tree_together_stay_under_4_mib() {
    let tree = TempTree::new();
    let filler = format!("#{}\n", "x".repeat(1000 * 1000));
    tree.write(
        "config.yaml",
        "include: [conf.d]\nenvironment_vars:\n  include: [a.env]\n",
    );
    for name in ["1", "2", "3"] {
        tree.write(&format!("conf.d/{name}.yaml"), &filler);
    }
    tree.write("a.env", &filler);
    tree.load().unwrap();
    tree.write("conf.d/4.yaml", &filler);
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: the config files together are larger than 4 MiB, the limit for one config tree",
            tree.path("a.env").display()
        )
    );
}

#[test]
fn a_byte_order_mark_is_accepted_and_hashed() {
    let tree = TempTree::new();
    // Before, a byte order mark in front of `---` made the parser refuse the file.
    let text = "\u{feff}---\ninclude: [b.yaml]\nservice:\n  name: bom\n";
    tree.write("config.yaml", text);
    tree.write("b.yaml", "\u{feff}plugins: {echo: {}}\n");
    let loaded = tree.load().unwrap();
    assert_eq!(loaded.config.service.name, "bom");
    assert!(loaded.config.plugin("echo").is_some());
    assert_eq!(
        loaded.config.files[0].hash,
        format!("blake3:{}", blake3::hash(text.as_bytes()).to_hex())
    );
    tree.write("config.yaml", "\u{feff}service:\n  name: [\n");
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}:3:1: invalid YAML: did not find expected node content, while parsing a flow node",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn deeply_nested_flow_collections_are_refused_before_parsing() {
    let tree = TempTree::new();
    let n = 100_000;
    tree.write(
        "config.yaml",
        &format!("service:\n  name: {}{}\n", "[".repeat(n), "]".repeat(n)),
    );
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}:2:73: flow collections (`[...]`, `{{...}}`) nest more than 64 levels deep",
            tree.path("config.yaml").display()
        )
    );
    tree.write(
        "config.yaml",
        &format!("plugins: {}{}\n", "{a: ".repeat(64), "}".repeat(64)),
    );
    tree.load().unwrap();
}

#[test]
fn deeply_nested_blocks_are_refused() {
    let tree = TempTree::new();
    let mut text = String::new();
    for level in 0..130 {
        text.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
    }
    tree.write("config.yaml", &text);
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}:129:129: values nest more than 128 levels deep",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn aliases_cannot_expand_a_small_file_past_the_allowance() {
    let tree = TempTree::new();
    let text = format!(
        "x-a: &a [{}1]\nx-b: [{}*a]\n",
        "1,".repeat(999),
        "*a,".repeat(999)
    );
    tree.write("config.yaml", &text);
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: the config expands to more than 500000 values or 16 MiB of text (an alias counts each time it is used, a variable each time it is referenced)",
            tree.path("config.yaml").display()
        )
    );
    // Each level doubling the last ("billion laughs"), here through merge keys.
    let mut chain = String::from("x-0: &a0 {k: 0}\n");
    for i in 1..40 {
        chain.push_str(&format!(
            "x-{i}: &a{i} {{<<: [*a{p}, *a{p}], k{i}: [*a{p}, *a{p}]}}\n",
            p = i - 1
        ));
    }
    tree.write("config.yaml", &chain);
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: the config expands to more than 500000 values or 16 MiB of text (an alias counts each time it is used, a variable each time it is referenced)",
            tree.path("config.yaml").display()
        )
    );
    // A long string repeated through aliases counts its text each time.
    let long = "y".repeat(100_000);
    tree.write(
        "config.yaml",
        &format!("x-s: &s {long}\nx-l: [{}*s]\n", "*s,".repeat(200)),
    );
    assert!(tree.error(&[]).contains("the config expands to more than"));
}

#[test]
fn a_large_variable_referenced_often_is_refused() {
    let tree = TempTree::new();
    let text = format!(
        "plugins:\n  echo:\n    config:\n      many: [{}\"${{BIG}}\"]\n",
        "\"${BIG}\",".repeat(199)
    );
    tree.write("config.yaml", &text);
    let big = "z".repeat(100 * 1024);
    assert_eq!(
        tree.error(&[("BIG", &big)]),
        format!(
            "{}: the config expands to more than 500000 values or 16 MiB of text (an alias counts each time it is used, a variable each time it is referenced)",
            tree.path("config.yaml").display()
        )
    );
    let small = "z".repeat(1024);
    tree.load_with(&[("BIG", &small)]).unwrap();
}

#[test]
fn an_explicit_root_that_is_not_a_file_is_named() {
    let tree = TempTree::new();
    let fifo = tree.path("config.yaml");
    mkfifo(&fifo);
    assert_eq!(
        discover(Some(&tree.dir)).unwrap_err().to_string(),
        format!(
            "{}: not a regular file; config and .env files must be plain files (not a FIFO, device or socket)",
            fifo.display()
        )
    );
}
