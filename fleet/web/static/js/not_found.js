// Unknown page: only the language switch.
import { setupLanguageSwitch } from './core.js';

setupLanguageSwitch();
