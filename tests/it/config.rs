//! Configuration: every flag of both binaries has an env var, and the README
//! documents every flag and env var (so a new knob cannot go undocumented).

use clap::CommandFactory;

fn check(command: clap::Command, readme: &str) {
    let name = command.get_name().to_string();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let flag = format!(
            "`--{}`",
            arg.get_long().expect("every option is a long flag")
        );
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("{name} {flag} has no env var"));
        let env = format!("`{}`", env.to_str().unwrap());
        assert!(
            readme.contains(&flag),
            "README does not document {name} {flag}"
        );
        assert!(
            readme.contains(&env),
            "README does not document {name}'s {env}"
        );
        assert!(arg.get_help().is_some(), "{name} {flag} has no help text");
    }
}

#[test]
fn every_flag_has_an_env_var_and_a_line_in_the_readme() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    check(herald_edge::Args::command(), &readme);
    check(herald_publisher::Args::command(), &readme);
}
