"""Held-out probes of the demo persona Maren (:mod:`services.demo_persona`): paraphrased
questions that appear in none of her memories, with the short answer she would give."""

from __future__ import annotations

from services.personas.persona import Probe

MAREN_PROBES = [
    Probe("Which fish stew do you make at the end of the week?", "Caldeirada, on Sundays."),
    Probe("What is your sailboat called?", "Gaivota, a wooden sloop."),
    Probe("Which instrument do you practise after work?", "The cello: Bach suites."),
    Probe("What does your brother do for work?", "Tiago fixes boat engines in Peniche."),
    Probe("What arrives from your mother every autumn?", "Jars of quince jam from Porto."),
    Probe("Which plants are you researching?", "Seagrass meadows on the Arrábida coast."),
    Probe("Which book are you rereading?", "The Log from the Sea of Cortez, by Steinbeck."),
    Probe("Where do you have your first coffee?", "At the kiosk by the Jardim da Estrela."),
    Probe("Where is your boat moored?", "At the Doca de Alcântara."),
    Probe("Where do you walk when the sea is too rough?", "The cliffs of Cabo Espichel."),
]
