// Starts `geonetc lsp` for .geonet files. The path comes from the `geonet.server.path` setting.
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("geonet");
  const command = config.get("server.path", "geonetc");
  const extra = config.get("server.extraArgs", []);
  const run = { command, args: ["lsp", ...extra], transport: TransportKind.stdio };
  client = new LanguageClient(
    "geonet",
    "geonet language server",
    { run, debug: run },
    { documentSelector: [{ scheme: "file", language: "geonet" }] }
  );
  client.start();
  context.subscriptions.push({ dispose: () => client && client.stop() });
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
