//! `parkguard user add` and `parkguard token new`: the entries for the site file's
//! `[[web.users]]` and `[[web.tokens]]`, with the password's argon2 hash and the token's
//! SHA-256 (neither the password nor the token is stored).

use std::process::ExitCode;

use parkguard::config::Role;

use super::{toml_string, usage_error};

/// A role of the web UI and API, as the command line names it.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Viewer,
    Operator,
    Technician,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Viewer => Role::Viewer,
            RoleArg::Operator => Role::Operator,
            RoleArg::Technician => Role::Technician,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Reads a password from standard input (the first line) and prints a `[[web.users]]`
    /// entry with its argon2 hash, to paste into the site file.
    Add {
        name: String,
        #[arg(long, value_enum, default_value_t = RoleArg::Operator)]
        role: RoleArg,
    },
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Prints a new random token (give it to the client) and the `[[web.tokens]]` entry with
    /// its hash (paste it into the site file). The token itself is not stored anywhere.
    New {
        name: String,
        #[arg(long, value_enum, default_value_t = RoleArg::Viewer)]
        role: RoleArg,
    },
}

impl UserCommand {
    pub fn run(self) -> ExitCode {
        match self {
            UserCommand::Add { name, role } => user_add(&name, role.into()),
        }
    }
}

impl TokenCommand {
    pub fn run(self) -> ExitCode {
        match self {
            TokenCommand::New { name, role } => token_new(&name, role.into()),
        }
    }
}

fn user_add(name: &str, role: Role) -> ExitCode {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        eprintln!("Password for {name} (shown as typed; pipe it in to keep it off the screen):");
    }
    let mut password = String::new();
    if let Err(err) = std::io::stdin().lock().read_line(&mut password) {
        eprintln!("cannot read the password: {err}");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.chars().count() < 8 {
        return usage_error("the password needs at least 8 characters");
    }
    match parkguard::web::hash_password(password) {
        Ok(hash) => {
            println!(
                "[[web.users]]\nname = {}\nrole = \"{}\"\npassword_hash = {}",
                toml_string(name),
                role.as_str(),
                toml_string(&hash)
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("cannot hash the password: {err}");
            ExitCode::FAILURE
        }
    }
}

fn token_new(name: &str, role: Role) -> ExitCode {
    let token = parkguard::web::random_token();
    eprintln!("Token (give it to the client; it is shown only now):");
    println!("{token}");
    eprintln!("Entry for the site file:");
    println!(
        "[[web.tokens]]\nname = {}\nrole = \"{}\"\ntoken_sha256 = \"{}\"",
        toml_string(name),
        role.as_str(),
        parkguard::web::token_sha256_hex(&token)
    );
    ExitCode::SUCCESS
}
