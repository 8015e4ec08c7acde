#!/usr/bin/env node
// The CLI runs the TypeScript sources through tsx, so a checkout needs no separate compile step.
import { register } from 'tsx/esm/api';
register();
await import('../src/cli/main.ts');
