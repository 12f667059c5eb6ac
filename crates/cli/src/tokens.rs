//! `cellwall tokens create|list|revoke` and `cellwall nodes revoke`: who may join or call the
//! manager, and withdrawing a node's certificate.

use crate::client::{age, header, print_structured, table, wire_name, Format, Target};
use anyhow::Result;
use cellwall_api::{TokenRequest, TokenRole};

#[derive(clap::Subcommand, Debug)]
pub enum TokensCmd {
    /// Create a token and print it on the last line (shown once; the manager keeps a hash).
    ///
    /// A bootstrap token (the default) lets an agent join as a node: bind it to a node name or
    /// pattern with --node (`web-*`), limit it with --ttl and --single-use. A node that already
    /// joined is re-joined only with a token made with --replace (its old certificate stops
    /// working and its streams are closed).
    Create(CreateArgs),
    /// List tokens (never their secrets), valid or not.
    List(ListArgs),
    /// Revoke a token by id: it stops working at once.
    Revoke(RevokeArgs),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    Bootstrap,
    Read,
    Admin,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The node name it may join; `*` matches any characters (e.g. web-*).
    #[arg(long)]
    pub node: Option<String>,
    /// How long it is valid: 30m, 24h, 7d (default: until revoked).
    #[arg(long)]
    pub ttl: Option<String>,
    /// Valid for one join only.
    #[arg(long)]
    pub single_use: bool,
    /// May replace the certificate of a node that already joined (needs --node).
    #[arg(long, requires = "node")]
    pub replace: bool,
    #[arg(long, value_enum, default_value = "bootstrap")]
    pub role: RoleArg,
    /// What it is for (kept in the audit trail); default: the node or the role.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The token's id (see `cellwall tokens list`).
    pub id: i64,
    #[command(flatten)]
    pub target: Target,
}

pub fn run(cmd: TokensCmd) -> Result<()> {
    match cmd {
        TokensCmd::Create(a) => create(a),
        TokensCmd::List(a) => list(a),
        TokensCmd::Revoke(a) => {
            a.target.client()?.revoke_token(a.id)?;
            println!("token #{} revoked", a.id);
            Ok(())
        }
    }
}

fn create(a: CreateArgs) -> Result<()> {
    let role = match a.role {
        RoleArg::Bootstrap => TokenRole::Bootstrap,
        RoleArg::Read => TokenRole::Read,
        RoleArg::Admin => TokenRole::Admin,
    };
    let name = a.name.clone().unwrap_or_else(|| match &a.node {
        Some(n) => format!("node {n}"),
        None => format!("{} token", wire_name(&role)),
    });
    let r = a.target.client()?.create_token(&TokenRequest {
        role,
        name,
        node: a.node.clone(),
        ttl: a.ttl.clone(),
        single_use: a.single_use,
        replace: a.replace,
    })?;
    let mut what = vec![wire_name(&role)];
    if let Some(n) = &a.node {
        what.push(format!("for node {n}"));
    }
    if let Some(t) = &a.ttl {
        what.push(format!("valid {t}"));
    }
    if a.single_use {
        what.push("single-use".into());
    }
    if a.replace {
        what.push("may replace the node's certificate".into());
    }
    eprintln!("token #{} ({}); shown once:", r.id, what.join(", "));
    println!("{}", r.token);
    Ok(())
}

fn list(a: ListArgs) -> Result<()> {
    let l = a.target.client()?.tokens()?;
    if print_structured(a.output, &l)? {
        return Ok(());
    }
    let now = crate::analyze::now_unix() * 1000;
    let mut rows = vec![header(&[
        "ID",
        "ROLE",
        "NAME",
        "NODE",
        "CREATED",
        "EXPIRES IN",
        "USE",
        "STATE",
    ])];
    for t in &l.items {
        rows.push(vec![
            t.id.to_string(),
            wire_name(&t.role),
            t.name.clone(),
            t.node.clone().unwrap_or_else(|| "-".into()),
            age(t.created_ms) + " ago",
            crate::client::left(t.expires_ms.map(|e| ((e - now) / 1000).max(0))),
            if t.single_use { "once" } else { "many" }.into(),
            if t.revoked {
                "revoked"
            } else if t.valid {
                "valid"
            } else if t.used_ms.is_some() && t.single_use {
                "used"
            } else {
                "expired"
            }
            .into(),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub enum NodesCmd {
    /// Withdraw a node's certificate: its calls are refused and its streams closed at once; it
    /// joins again only with a token (`cellwall tokens create --node NAME`).
    Revoke(NodeRevokeArgs),
}

#[derive(clap::Args, Debug)]
pub struct NodeRevokeArgs {
    pub node: String,
    #[command(flatten)]
    pub target: Target,
}

pub fn nodes(cmd: NodesCmd) -> Result<()> {
    match cmd {
        NodesCmd::Revoke(a) => {
            a.target.client()?.revoke_node(&a.node)?;
            println!("node {}: certificate withdrawn, streams closed", a.node);
            Ok(())
        }
    }
}
