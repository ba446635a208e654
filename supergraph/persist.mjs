#!/usr/bin/env node
// Build the persisted-documents manifest supergraph/persisted-documents.json ({sha256: document},
// read by Hive Gateway) and the same operations in Apollo's format,
// supergraph/persisted-query-manifest.json ({format: "apollo-persisted-query-manifest", version: 1,
// operations: [{id, name, type, body}]}, for Apollo Router's safelist and Apollo's client tooling),
// from schema/operations/*.graphql. One file = one document (one operation plus the fragments it
// uses). The stored document is the file as @apollo/client sends it: its cache's document transform
// (which adds `__typename` to every selection set but the root) then graphql-js `print()`; the key
// is the lowercase hex SHA-256 of that text, which is the hash Apollo's persisted-query link
// computes (sha256 of the printed transformed document), so a mobile app held to the safelist can
// use the link as is. (@apollo/client is a devDependency: this is a build step, not the gateway.)
//
//   node supergraph/persist.mjs            # (re)write the manifest; no operations -> {}
//   node supergraph/persist.mjs --check    # exit 1 if the committed manifest is stale
//
// Options:
//   --operations <dir>  default: schema/operations
//   --output <file>     default: supergraph/persisted-documents.json
//   --apollo-output <file>  default: persisted-query-manifest.json next to --output
//   --schema <file>     supergraph to validate operations against (default: schema/supergraph.graphql,
//                       skipped with a warning when it does not exist)
//   --no-validate       do not validate operations against the supergraph's API schema
//   --check             compare instead of writing
//
// Clients send {"documentId": "<hash>"} or the Apollo APQ shape
// {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "<hash>"}}}.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

import { Kind, parse, print, Source, validate } from 'graphql';

/** The document as Apollo Client sends it (InMemoryCache's transform, as in the persisted-query link). */
async function apolloTransform() {
  const { InMemoryCache } = await import('@apollo/client');
  const cache = new InMemoryCache();
  return (doc) => cache.transformDocument(doc);
}

const here = path.dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const opts = {
    operations: path.join(here, '..', 'schema', 'operations'),
    output: path.join(here, 'persisted-documents.json'),
    apolloOutput: null,
    schema: path.join(here, '..', 'schema', 'supergraph.graphql'),
    validate: true,
    check: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      if (argv[i + 1] === undefined) throw new Error(`${a} needs a value`);
      return path.resolve(argv[++i]);
    };
    if (a === '--operations') opts.operations = v();
    else if (a === '--output') opts.output = v();
    else if (a === '--apollo-output') opts.apolloOutput = v();
    else if (a === '--schema') opts.schema = v();
    else if (a === '--no-validate') opts.validate = false;
    else if (a === '--check') opts.check = true;
    else throw new Error(`unknown argument: ${a}`);
  }
  opts.apolloOutput ??= path.join(path.dirname(opts.output), 'persisted-query-manifest.json');
  return opts;
}

export function sha256(text) {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

async function apiSchemaFrom(supergraphFile) {
  // The supergraph contains join__/link__ machinery; clients see its API schema.
  const { Supergraph } = await import('@apollo/federation-internals');
  return Supergraph.build(readFileSync(supergraphFile, 'utf8')).apiSchema().toGraphQLJSSchema();
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const files = existsSync(opts.operations)
    ? readdirSync(opts.operations).filter((f) => f.endsWith('.graphql')).sort()
    : [];

  let schema;
  if (opts.validate && files.length) {
    if (existsSync(opts.schema)) schema = await apiSchemaFrom(opts.schema);
    else console.error(`warning: ${opts.schema} not found; operations are not validated`);
  }

  const asSent = await apolloTransform();
  const manifest = {};
  const apolloOperations = [];
  const names = new Map();
  const problems = [];
  for (const f of files) {
    const file = path.join(opts.operations, f);
    let doc;
    try {
      doc = parse(new Source(readFileSync(file, 'utf8'), f));
    } catch (e) {
      problems.push(`${f}: ${e.message}`);
      continue;
    }
    const ops = doc.definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);
    if (ops.length !== 1) {
      problems.push(`${f}: expected exactly one operation, found ${ops.length}`);
      continue;
    }
    const name = ops[0].name?.value;
    if (!name) {
      problems.push(`${f}: the operation must be named`);
      continue;
    }
    if (names.has(name)) {
      problems.push(`${f}: operation name ${name} is already used in ${names.get(name)}`);
      continue;
    }
    names.set(name, f);
    if (schema) {
      for (const err of validate(schema, doc)) {
        const loc = err.locations?.[0];
        problems.push(`${f}${loc ? `:${loc.line}:${loc.column}` : ''}: ${err.message}`);
      }
    }
    const printed = print(asSent(doc));
    manifest[sha256(printed)] = printed;
    apolloOperations.push({ id: sha256(printed), name, type: ops[0].operation, body: printed });
  }
  if (problems.length) {
    console.error(`persisted documents: ${problems.length} problem(s):`);
    for (const p of problems) console.error(`  error ${p}`);
    return 1;
  }

  const sorted = Object.fromEntries(Object.entries(manifest).sort(([a], [b]) => a.localeCompare(b)));
  apolloOperations.sort((a, b) => a.id.localeCompare(b.id));
  const apollo = { format: 'apollo-persisted-query-manifest', version: 1, operations: apolloOperations };
  const outputs = [
    [opts.output, JSON.stringify(sorted, null, 2) + '\n'],
    [opts.apolloOutput, JSON.stringify(apollo, null, 2) + '\n'],
  ];
  const count = Object.keys(sorted).length;
  const stale = outputs.filter(([file, text]) => (existsSync(file) ? readFileSync(file, 'utf8') : null) !== text);
  if (opts.check) {
    if (stale.length) {
      for (const [file] of stale) {
        console.error(`DRIFT: ${file} is stale (${count} document(s) expected); run: node supergraph/persist.mjs`);
      }
      return 1;
    }
    console.log(`ok: persisted-documents manifests up to date (${count} document(s))`);
    return 0;
  }
  for (const [file, text] of stale) {
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, text);
    renameSync(tmp, file);
  }
  for (const [file] of outputs) {
    const written = stale.some(([f]) => f === file);
    console.log(`${written ? 'wrote' : 'unchanged'} ${path.relative(process.cwd(), file)} (${count} document(s))`);
  }
  return 0;
}

main().then(
  (code) => { process.exitCode = code; },
  (e) => { console.error(`error: ${e.message}`); process.exitCode = 2; },
);
