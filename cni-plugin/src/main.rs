//! `xsknet`: the CNI plugin executable container runtimes call (`"type": "xsknet"`).
//! Everything happens in [`xsknet_cni::skel::run`], which takes the environment,
//! stdin and stdout as parameters; this file only hands it the real ones.

#![deny(unsafe_code)]

fn main() {
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let platform = xsknet_cni::platform::System;
    let code = xsknet_cni::skel::run(
        &env,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &platform,
    );
    std::process::exit(code);
}
