//! `make wasm`: `wasm-unexport IN OUT` writes IN without the proxy-wasm callbacks meshguard
//! does not use, nor the libc functions it overrides (meshguard_devtools::wasm_exports).

use meshguard_devtools::wasm_exports::{remove_exports, LIBC_OVERRIDES, UNUSED_CALLBACKS};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: wasm-unexport IN.wasm OUT.wasm");
        std::process::exit(2);
    };
    let run = || -> meshguard_devtools::Result<Vec<String>> {
        let module = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
        let drop: Vec<&str> = UNUSED_CALLBACKS
            .iter()
            .chain(LIBC_OVERRIDES)
            .copied()
            .collect();
        let (out, removed) = remove_exports(&module, &drop)?;
        let tmp = format!("{output}.tmp");
        std::fs::write(&tmp, out)?;
        std::fs::rename(&tmp, output)?;
        Ok(removed)
    };
    match run() {
        Ok(removed) => println!("wasm-unexport: {output} without {}", removed.join(", ")),
        Err(e) => {
            eprintln!("wasm-unexport: {e}");
            std::process::exit(1);
        }
    }
}
