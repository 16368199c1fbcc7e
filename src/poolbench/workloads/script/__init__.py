"""pgbench's script language, the supported subset: parse a script file, run it for one
client without I/O. See parser.py for what is supported and how variables are bound."""

from poolbench.workloads.script.builtin import BUILTIN_SCRIPTS, builtin_script
from poolbench.workloads.script.errors import ScriptError, ScriptRuntimeError
from poolbench.workloads.script.interp import ScriptRunner, SleepStep, SqlStep, Step
from poolbench.workloads.script.parser import (
    BUILTIN_VARIABLES,
    Command,
    ParamStyle,
    Script,
    SetCommand,
    SleepCommand,
    SqlCommand,
    TxRole,
    parse_script,
    parse_weighted,
)

__all__ = [
    "BUILTIN_SCRIPTS", "BUILTIN_VARIABLES", "Command", "ParamStyle", "Script", "ScriptError",
    "ScriptRunner", "ScriptRuntimeError", "SetCommand", "SleepCommand", "SleepStep",
    "SqlCommand", "SqlStep", "Step", "TxRole", "builtin_script", "parse_script",
    "parse_weighted",
]
